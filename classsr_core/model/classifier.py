"""The paper's Class-Module: five convolutions, global average pooling and a linear layer."""

from __future__ import annotations

import torch
from torch import nn


class ClassModule(nn.Module):
    """ClassSR's patch classifier (60,035 parameters for 3 classes on RGB).

    Conv 4x4/4 (C->128) + LeakyReLU, three 1x1 (128->128) + LeakyReLU, 1x1 (128->32),
    average pooling over the whole map, Linear(32, M). ``input_scale`` multiplies the input
    first (the official RCAN variant sees x/255 because its network ran on 0..255).

    ``center`` (not in the paper) subtracts each patch's per-channel mean first, so the
    routing cannot depend on brightness. Trained briefly (1,000 iterations), the paper's
    module routed almost by brightness alone: on the validation photos the expected class of
    ``classsr-fsrcnn-x4`` has Spearman -0.97 with the patch's mean intensity and 0.05 with
    what the widest branch gains there (docs/model-zoo.md).
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 3,
        input_scale: float = 1.0,
        init_scale: float = 0.1,
        center: bool = False,
    ):
        super().__init__()
        self.input_scale = input_scale
        self.center = center
        self.init_scale = init_scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 128, 4, 4), nn.LeakyReLU(0.1, True)]
        for _ in range(3):
            layers += [nn.Conv2d(128, 128, 1), nn.LeakyReLU(0.1, True)]
        layers.append(nn.Conv2d(128, 32, 1))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(32, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official code: Kaiming, scaled by 0.1, so early routing is near uniform.
        # Five scaled layers shrink the features ~1e5-fold, so the classifier needs thousands
        # of iterations to start learning; init_scale=1 suits short runs (examples/tiny.yaml).
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(self.init_scale)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.center:
            x = x - x.mean(dim=(2, 3), keepdim=True)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return self.fc(self.body(x).mean(dim=(2, 3)))
