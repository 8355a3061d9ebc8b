"""The CIFAR variant of ResNet-18 (He et al., CVPR 2016; the 3x3-stem version of
kuangliu/pytorch-cifar): BasicBlocks [2, 2, 2, 2] at widths w, 2w, 4w, 8w, BatchNorm after
every conv, global average pooling and one Linear. `width=64` is the real model (11.2 M
parameters); tests pass 4 or 8 so that a forward pass on a few images is milliseconds."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs. `detach_trunk=True` plants the bug of the issue: the
    features are detached before the classifier, so only the last Linear learns."""

    def __init__(
        self, classes: int = 10, width: int = 64, channels: int = 3, detach_trunk: bool = False
    ):
        super().__init__()
        self.detach_trunk = detach_trunk
        self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, blocks in enumerate((2, 2, 2, 2)):
            cout, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.pool(out).flatten(1)
        if self.detach_trunk:
            out = out.detach()
        return self.linear(out)


def resnet18(classes: int = 10, width: int = 64, **kwargs) -> ResNet18:
    return ResNet18(classes, width, **kwargs)
