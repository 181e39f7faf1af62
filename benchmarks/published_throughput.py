"""Published single-device training throughputs, each with its source.

Every row is a figure copied from the page named in ``source``; nothing here is
estimated. ``role`` says how dtsim uses it: "fitted" rows set the per-(device, dtype,
layer kind) efficiencies of the built-in profiles (``benchmarks/published_fit.py``);
"held out" rows were chosen before the fit and never seen by it, so their error is the
model's error on a figure it was not tuned to (but one modelled cost, the attention
score traffic, was chosen after their errors were seen). "held out (new, 2026-12-01)"
rows (:data:`HELD_OUT_NEW`) were written and committed before dtsim predicted any of
them (see the block comment above them): no efficiency, cost or profile has seen them.

Not found as a published single-device figure with a source we could read, so left out:
H200, and H100 from NVIDIA (its per-GPU training tables we found give 8-GPU or
time-to-train figures only; the single H100 SXM5 rows are Lambda's), ResNet-101 (no
DLE or tf_cnn_benchmarks table), GPT-2 single-GPU training. Inception-v3 and
ResNet-152 have tf_cnn_benchmarks figures (below, as comments) but no built-in
workload yet.
"""

from __future__ import annotations

from dataclasses import dataclass

TF_CNN_P100 = (
    "TensorFlow performance benchmarks, 'Details for NVIDIA DGX-1 (NVIDIA Tesla P100)', "
    "training synthetic data, 1 GPU, tf_cnn_benchmarks, CUDA 8.0 / cuDNN 5.1, May 2017 "
    "(tensorflow/tensorflow tensorflow/docs_src/performance/benchmarks.md; "
    "https://www.tensorflow.org/performance/benchmarks)"
)
DLE_PT_RN50 = (
    "NVIDIA DeepLearningExamples PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "
    "training performance, 1 GPU (pytorch-21.03); batch from configs.yml"
)
DLE_TF_RN50 = (
    "NVIDIA DeepLearningExamples TensorFlow/Classification/ConvNets/resnet50v1.5/README.md, "
    "training performance, 1 GPU (TensorFlow 20.06-tf1-py3), with XLA: the table's "
    "columns are 'TF32 + XLA' / 'FP32 + XLA' and 'mixed precision + XLA' (commit 9de48bc9 "
    "and every version since 5d36b4fd, 2020-09; this string said 'no XLA' until "
    "2026-12-01, a transcription error, figures unchanged)"
)
DLE_PT_BERT = (
    "NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md (commit a07d20a1), "
    "pre-training performance, 1 GPU, phase 1 (pytorch:21.11-py3); batch per step = "
    "accumulated batch / accumulation steps. Its phase-2 (sequence 512) rows are left out: "
    "that release bins phase-2 sequences by length (LDDL, bins of 64 tokens), so a "
    "'sequence' there is not 512 tokens"
)
DLE_PT_BERT_2006 = (
    "NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md at commit "
    "78ec6802 (pytorch:20.06-py3, before LDDL binning), pre-training performance, 1 GPU; "
    "batch per step = batch size / accumulation steps"
)


# Lambda's runs of DeepLearningExamples on one GPU (lambdal/deeplearning-benchmark).
LAMBDA = (
    "lambdal/deeplearning-benchmark at commit a8e6d619 (2023-02-14, 'Add H100 SXM5'): "
    "pytorch/pytorch-train-throughput-fp16.csv / -fp32.csv (rows 'H100 80GB SXM5' and "
    "'A100 80GB SXM4', one GPU), batch from pytorch-train-bs-*.csv and the logs in "
    "pytorch/results/H100_80GB_SXM5_v1/ (14 Feb 2023) and A100_80GB_SXM4_v1/ (19 Nov "
    "2022); DeepLearningExamples code in an NGC PyTorch container (README: pytorch:22.10-"
    "py3 the latest tested; the logs' NVIDIA build ids 46164382 and 44877844)"
)
LAMBDA_RN50 = (
    LAMBDA + "; ResNet-50: ConvNets main.py --arch resnet50 --data-backend synthetic "
    "--training-only, no --memory-format (channels-first), 'Summary: train.total_ips'"
)
LAMBDA_SQUAD = (
    LAMBDA + "; BERT-large: run_squad.py --do_train --max_seq_length=384 (SQuAD v1.1 "
    "fine-tuning, no accumulation), 'training_sequences_per_second' over 100 steps"
)
DLE_PT_SQUAD_2006 = (
    "NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md at commit "
    "78ec6802 (pytorch:20.06-py3), 'Fine-tuning NVIDIA DGX A100 (8x A100 40GB)', "
    "'Fine-tuning NVIDIA DGX-1 With 32G' and '... With 16G', SQuAD, 1 GPU; "
    "scripts/run_squad.sh: --max_seq_length=384, no accumulation; run_squad.py: "
    "FusedAdam (fp16) or BertAdam (fp32)"
)
DLE_PT_SQUAD_2111 = (
    "NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md at commit "
    "a07d20a1 (pytorch:21.11-py3), 'Fine-tuning NVIDIA DGX A100 (8x A100 80GB)' and "
    "'Fine-tuning NVIDIA DGX-1 With 32G', SQuAD, 1 GPU; scripts/run_squad.sh: "
    "--max_seq_length=384, no accumulation"
)
DLE_MX_RN50 = (
    "NVIDIA DeepLearningExamples MxNet/Classification/RN50v1.5/README.md at commit "
    "1bd98ac3, training performance, 1 GPU, 'Total IPS (data + compute)'; benchmark.py "
    "-b is the batch per GPU (runner: 'batch size per GPU'); DGX A100 (8x A100 80GB) rows "
    "in mxnet-22.10-py3, DGX-1 (8x V100 16GB) rows in mxnet-20.12-py3"
)
HELD_OUT_NEW = "held out (new, 2026-12-01)"
# Lambda's "FP32" on A100 and H100: PyTorch runs cuDNN convolutions in TF32 by default
# (torch.backends.cudnn.allow_tf32); for cuBLAS GEMMs PyTorch >= 1.12 defaults to FP32,
# and NGC containers turn TF32 back on (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE, pytorch/pytorch
# #77114). The published figures alone say so: BERT-large trains at about 6 x 335M
# params x 384 tokens = 0.77 TFLOP per SQuAD sequence, so Lambda's "FP32" 75.6 seq/s on
# A100 is 58 TFLOP/s and 141.8 on H100 is 109, each above the device's FP32 peak (19.5,
# 67). So dtype tf32.
TF32_NOTE = "'FP32' is TF32 (NGC PyTorch defaults)"


@dataclass(frozen=True, slots=True)
class Published:
    """One published single-device training throughput.

    profile: the built-in profile whose device it ran on. workload / params: the
    built-in workload (and its parameters, e.g. ``seq_len``). dtype: dtsim's dtype for
    the precision published ("AMP" mixed precision is fp16). batch: samples per step.
    accumulation: micro-batches per optimizer step (gradient accumulation), so the
    update is paid once per ``accumulation`` steps. samples_per_s: the published figure
    (images or sequences per second). optimizer: dtsim's name for the update rule used.
    """

    what: str
    role: str  # "fitted", "held out" or HELD_OUT_NEW
    profile: str
    workload: str
    dtype: str
    batch: int
    samples_per_s: float
    source: str
    optimizer: str = "momentum"
    accumulation: int = 1
    seq_len: int | None = None
    note: str = ""


SINGLE_DEVICE: tuple[Published, ...] = (
    # -- Tesla P100 SXM2 (DGX-1), FP32, TensorFlow tf_cnn_benchmarks (synthetic data, sgd).
    # Not used (no built-in workload): InceptionV3 142 img/s (b64), 128 (b32);
    # ResNet-152 91.8 (b64), 82.7 (b32).
    Published(
        "ResNet-50 FP32 b64, P100",
        "fitted",
        "dgx1-p100",
        "resnet50",
        "fp32",
        64,
        219.0,
        TF_CNN_P100,
        "sgd",
        note="tf_cnn_benchmarks resnet50 is v1",
    ),
    Published(
        "AlexNet FP32 b512, P100",
        "held out",
        "dgx1-p100",
        "alexnet",
        "fp32",
        512,
        2987.0,
        TF_CNN_P100,
        "sgd",
    ),
    Published(
        "ResNet-50 FP32 b32, P100",
        "held out",
        "dgx1-p100",
        "resnet50",
        "fp32",
        32,
        195.0,
        TF_CNN_P100,
        "sgd",
        note="tf_cnn_benchmarks 'other results'",
    ),
    Published(
        "VGG-16 FP32 b64, P100",
        "held out",
        "dgx1-p100",
        "vgg16",
        "fp32",
        64,
        154.0,
        TF_CNN_P100,
        "sgd",
    ),
    Published(
        "VGG-16 FP32 b32, P100",
        "held out",
        "dgx1-p100",
        "vgg16",
        "fp32",
        32,
        144.0,
        TF_CNN_P100,
        "sgd",
        note="tf_cnn_benchmarks 'other results'",
    ),
    # -- Tesla V100 SXM2 (DGX-1).
    Published(
        "ResNet-50 FP32 b112, V100 (PyTorch)",
        "fitted",
        "dgx1-v100",
        "resnet50",
        "fp32",
        112,
        367.0,
        DLE_PT_RN50,
        note="V100 16GB",
    ),
    Published(
        "ResNet-50 AMP b256, V100 (PyTorch)",
        "fitted",
        "dgx1-v100",
        "resnet50",
        "fp16",
        256,
        1200.0,
        DLE_PT_RN50,
        note="V100 16GB",
    ),
    Published(
        "ResNet-50 FP32 b128, V100 (TensorFlow)",
        "held out",
        "dgx1-v100",
        "resnet50",
        "fp32",
        128,
        412.0,
        DLE_TF_RN50,
        note="V100 16GB",
    ),
    Published(
        "ResNet-50 AMP b256, V100 (TensorFlow)",
        "held out",
        "dgx1-v100",
        "resnet50",
        "fp16",
        256,
        1270.0,
        DLE_TF_RN50,
        note="V100 16GB",
    ),
    Published(
        "BERT-large s128 FP32 b8, V100",
        "fitted",
        "dgx1-v100",
        "bert-large",
        "fp32",
        8,
        40.0,
        DLE_PT_BERT_2006,
        "adam",
        8192,
        128,
        note="LAMB; V100 32GB",
    ),
    Published(
        "BERT-large s128 AMP b16, V100",
        "fitted",
        "dgx1-v100",
        "bert-large",
        "fp16",
        16,
        158.0,
        DLE_PT_BERT_2006,
        "adam",
        4096,
        128,
        note="LAMB; V100 32GB",
    ),
    Published(
        "BERT-large s512 FP32 b2, V100",
        "held out",
        "dgx1-v100",
        "bert-large",
        "fp32",
        2,
        9.0,
        DLE_PT_BERT_2006,
        "adam",
        16384,
        512,
        note="LAMB; V100 32GB",
    ),
    Published(
        "BERT-large s512 AMP b4, V100",
        "held out",
        "dgx1-v100",
        "bert-large",
        "fp16",
        4,
        33.0,
        DLE_PT_BERT_2006,
        "adam",
        8192,
        512,
        note="LAMB; V100 32GB",
    ),
    Published(
        "BERT-large s128 FP32 b32, V100 (21.11)",
        "held out",
        "dgx1-v100",
        "bert-large",
        "fp32",
        32,
        50.0,
        DLE_PT_BERT,
        "adam",
        128,
        128,
        note="LAMB; V100 32GB",
    ),
    Published(
        "BERT-large s128 AMP b64, V100 (21.11)",
        "held out",
        "dgx1-v100",
        "bert-large",
        "fp16",
        64,
        224.0,
        DLE_PT_BERT,
        "adam",
        64,
        128,
        note="LAMB; V100 32GB",
    ),
    # -- A100 SXM4 (DGX A100).
    Published(
        "ResNet-50 TF32 b256, A100 (PyTorch)",
        "fitted",
        "dgx-a100",
        "resnet50",
        "tf32",
        256,
        938.0,
        DLE_PT_RN50,
        note="A100 80GB",
    ),
    Published(
        "ResNet-50 AMP b256, A100 (PyTorch)",
        "fitted",
        "dgx-a100",
        "resnet50",
        "fp16",
        256,
        2470.0,
        DLE_PT_RN50,
        note="A100 80GB",
    ),
    Published(
        "ResNet-50 TF32 b256, A100 (TensorFlow)",
        "held out",
        "dgx-a100",
        "resnet50",
        "tf32",
        256,
        909.0,
        DLE_TF_RN50,
        note="A100 40GB (1,555 GB/s; profile: 80GB)",
    ),
    Published(
        "ResNet-50 AMP b256, A100 (TensorFlow)",
        "held out",
        "dgx-a100",
        "resnet50",
        "fp16",
        256,
        2375.0,
        DLE_TF_RN50,
        note="A100 40GB (1,555 GB/s; profile: 80GB)",
    ),
    Published(
        "BERT-large s128 TF32 b54, A100",
        "fitted",
        "dgx-a100",
        "bert-large",
        "tf32",
        54,
        234.0,
        DLE_PT_BERT_2006,
        "adam",
        1208,
        128,
        note="LAMB; A100 40GB",
    ),
    Published(
        "BERT-large s128 AMP b64, A100",
        "fitted",
        "dgx-a100",
        "bert-large",
        "fp16",
        64,
        415.0,
        DLE_PT_BERT_2006,
        "adam",
        1024,
        128,
        note="LAMB; A100 40GB",
    ),
    Published(
        "BERT-large s512 TF32 b8, A100",
        "held out",
        "dgx-a100",
        "bert-large",
        "tf32",
        8,
        41.0,
        DLE_PT_BERT_2006,
        "adam",
        4096,
        512,
        note="LAMB; A100 40GB",
    ),
    Published(
        "BERT-large s512 AMP b16, A100",
        "held out",
        "dgx-a100",
        "bert-large",
        "fp16",
        16,
        78.0,
        DLE_PT_BERT_2006,
        "adam",
        2048,
        512,
        note="LAMB; A100 40GB",
    ),
    Published(
        "BERT-large s128 TF32 b128, A100 (21.11)",
        "held out",
        "dgx-a100",
        "bert-large",
        "tf32",
        128,
        317.0,
        DLE_PT_BERT,
        "adam",
        64,
        128,
        note="LAMB; A100 80GB",
    ),
    Published(
        "BERT-large s128 AMP b256, A100 (21.11)",
        "held out",
        "dgx-a100",
        "bert-large",
        "fp16",
        256,
        580.0,
        DLE_PT_BERT,
        "adam",
        32,
        128,
        note="LAMB; A100 80GB",
    ),
    # -- New held-out rows, pre-registered 2026-12-01. Written and committed before dtsim
    # predicted any of them; no efficiency, cost or profile may be changed after seeing
    # their errors (a mis-transcription may be corrected, with a note saying so).
    # Chosen by these rules, fixed before any prediction: a single-GPU training
    # throughput whose source states the batch per GPU, the precision and the software;
    # on a device a built-in profile models (P100/V100 SXM2, A100 SXM4 40/80GB, H100
    # SXM5: DGX-2's V100 SXM3, H100 PCIe and Lambda's A100 40GB/PCIe rows are left out);
    # a model a built-in workload expresses unchanged (bert-large is the encoder without
    # pre-training heads, so SQuAD fine-tuning fits it: its QA head is 1024 x 2); not
    # already above. One run per (source, device, model, precision): Lambda's own
    # server, not the vendors' servers it later benchmarked (Dell, SMC, 1CC, RAIDZ1).
    # Left out: PaddlePaddle's RN50 README (no batch in its table), DLE PyTorch and
    # TensorFlow rows already used above, Lambda's other models (no built-in workload).
    Published(
        "BERT-large SQuAD s384 TF32 b16, A100 (20.06)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "tf32",
        16,
        44.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="A100 40GB",
    ),
    Published(
        "BERT-large SQuAD s384 AMP b32, A100 (20.06)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "fp16",
        32,
        116.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="A100 40GB",
    ),
    Published(
        "BERT-large SQuAD s384 FP32 b8, V100 32GB (20.06)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp32",
        8,
        12.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="V100 32GB",
    ),
    Published(
        "BERT-large SQuAD s384 AMP b10, V100 32GB (20.06)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp16",
        10,
        49.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="V100 32GB",
    ),
    Published(
        "BERT-large SQuAD s384 FP32 b4, V100 16GB (20.06)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp32",
        4,
        9.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="V100 16GB",
    ),
    Published(
        "BERT-large SQuAD s384 AMP b10, V100 16GB (20.06)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp16",
        10,
        50.0,
        DLE_PT_SQUAD_2006,
        "adam",
        seq_len=384,
        note="V100 16GB",
    ),
    Published(
        "BERT-large SQuAD s384 TF32 b32, A100 (21.11)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "tf32",
        32,
        61.5,
        DLE_PT_SQUAD_2111,
        "adam",
        seq_len=384,
        note="A100 80GB",
    ),
    Published(
        "BERT-large SQuAD s384 AMP b32, A100 (21.11)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "fp16",
        32,
        110.5,
        DLE_PT_SQUAD_2111,
        "adam",
        seq_len=384,
        note="A100 80GB",
    ),
    Published(
        "BERT-large SQuAD s384 FP32 b8, V100 32GB (21.11)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp32",
        8,
        12.0,
        DLE_PT_SQUAD_2111,
        "adam",
        seq_len=384,
        note="V100 32GB",
    ),
    Published(
        "BERT-large SQuAD s384 AMP b16, V100 32GB (21.11)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "bert-large",
        "fp16",
        16,
        52.0,
        DLE_PT_SQUAD_2111,
        "adam",
        seq_len=384,
        note="V100 32GB",
    ),
    Published(
        "ResNet-50 TF32 b512, A100 (MXNet 22.10)",
        HELD_OUT_NEW,
        "dgx-a100",
        "resnet50",
        "tf32",
        512,
        1055.78,
        DLE_MX_RN50,
        "momentum",
        note="A100 80GB; real data through DALI",
    ),
    Published(
        "ResNet-50 AMP b512, A100 (MXNet 22.10)",
        HELD_OUT_NEW,
        "dgx-a100",
        "resnet50",
        "fp16",
        512,
        3410.52,
        DLE_MX_RN50,
        "momentum",
        note="A100 80GB; real data through DALI",
    ),
    Published(
        "ResNet-50 FP32 b96, V100 (MXNet 20.12)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "resnet50",
        "fp32",
        96,
        384.0,
        DLE_MX_RN50,
        "momentum",
        note="V100 16GB; real data through DALI",
    ),
    Published(
        "ResNet-50 AMP b192, V100 (MXNet 20.12)",
        HELD_OUT_NEW,
        "dgx1-v100",
        "resnet50",
        "fp16",
        192,
        1376.0,
        DLE_MX_RN50,
        "momentum",
        note="V100 16GB; real data through DALI",
    ),
    Published(
        "ResNet-50 AMP b1280, H100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-h100",
        "resnet50",
        "fp16",
        1280,
        2616.0,
        LAMBDA_RN50,
        "momentum",
        note="H100 SXM5 80GB; log: 2616.25 img/s",
    ),
    Published(
        "ResNet-50 'FP32' (TF32) b640, H100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-h100",
        "resnet50",
        "tf32",
        640,
        1753.0,
        LAMBDA_RN50,
        "momentum",
        note="H100 SXM5 80GB; log: 1753.15 img/s" + "; " + TF32_NOTE,
    ),
    Published(
        "BERT-large SQuAD s384 FP16 b112, H100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-h100",
        "bert-large",
        "fp16",
        112,
        301.0,
        LAMBDA_SQUAD,
        "adam",
        seq_len=384,
        note="H100 SXM5 80GB; log: 301.10 seq/s; apex O2",
    ),
    Published(
        "BERT-large SQuAD s384 'FP32' (TF32) b64, H100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-h100",
        "bert-large",
        "tf32",
        64,
        141.0,
        LAMBDA_SQUAD,
        "adam",
        seq_len=384,
        note="H100 SXM5 80GB; log: 141.84 seq/s" + "; " + TF32_NOTE,
    ),
    Published(
        "ResNet-50 AMP b1280, A100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-a100",
        "resnet50",
        "fp16",
        1280,
        1582.0,
        LAMBDA_RN50,
        "momentum",
        note="A100 80GB SXM4; log: 1582.19 img/s",
    ),
    Published(
        "ResNet-50 'FP32' (TF32) b640, A100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-a100",
        "resnet50",
        "tf32",
        640,
        1066.0,
        LAMBDA_RN50,
        "momentum",
        note="A100 80GB SXM4; log: 1066.76 img/s" + "; " + TF32_NOTE,
    ),
    Published(
        "BERT-large SQuAD s384 FP16 b112, A100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "fp16",
        112,
        152.0,
        LAMBDA_SQUAD,
        "adam",
        seq_len=384,
        note="A100 80GB SXM4; log: 152.85 seq/s; apex O2",
    ),
    Published(
        "BERT-large SQuAD s384 'FP32' (TF32) b64, A100 (Lambda)",
        HELD_OUT_NEW,
        "dgx-a100",
        "bert-large",
        "tf32",
        64,
        75.0,
        LAMBDA_SQUAD,
        "adam",
        seq_len=384,
        note="A100 80GB SXM4; log: 75.59 seq/s" + "; " + TF32_NOTE,
    ),
)
