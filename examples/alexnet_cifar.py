"""An AlexNet-shaped model for 3x32x32 images, as a user would write it: five
convolutions and three fully connected layers, about 17 M parameters, so its gradient
(about 66 MiB in fp32) is larger than the default collective sweep's 64 MiB.

    dtsim validate --torch-model examples.alexnet_cifar:model --np 2 ...
    dtsim calibrate all --torch-model examples.alexnet_cifar:model --out my-box.yaml --np 2
"""

from __future__ import annotations

from torch import nn


class AlexNetCifar(nn.Sequential):
    dtsim_input_shape = (3, 32, 32)  # per sample; read by dtsim


def model() -> nn.Module:
    return AlexNetCifar(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16x16
        nn.Conv2d(64, 192, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4x4
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, 2560),
        nn.ReLU(),
        nn.Linear(2560, 1792),
        nn.ReLU(),
        nn.Linear(1792, 10),
    )
