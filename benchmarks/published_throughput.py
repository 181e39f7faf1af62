"""Published single-device training throughputs, each with its source.

Every row is a figure copied from the page named in ``source``; nothing here is
estimated. ``role`` says how dtsim uses it: "fitted" rows set the per-(device, dtype,
layer kind) efficiencies of the built-in profiles (``benchmarks/published_fit.py``);
"held out" rows were chosen before the fit and never seen by it, so their error is the
model's error on a figure it was not tuned to.

Not found as a published single-device figure with a source we could read, so left out:
H100 and H200 (NVIDIA's per-GPU training tables we found give 8-GPU or time-to-train
figures only), ResNet-101 (no DLE or tf_cnn_benchmarks table), GPT-2 single-GPU
training. Inception-v3 and ResNet-152 have tf_cnn_benchmarks figures (below, as
comments) but no built-in workload yet.
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
    "training performance, 1 GPU (TensorFlow 20.06-tf1-py3), no XLA"
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
    role: str  # "fitted" or "held out"
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
)
