"""PainSeeker and ResNet-18 in PyTorch: the reference that benchmarks race and tests compare with.

torch is not a dependency of the package (install the `bench` or `test` extra);
every function takes the imported `torch` module. The networks follow
torchvision's `resnet18` layout and use the names of `painseeker_jax.models`
for the heads (`region_score` = g, `fc` = h), so that
`pretrained.state_dict_to_variables(net.state_dict(), models.PainSeeker18(...))`
gives the Flax variables of the same network.
"""

from __future__ import annotations


def resnet18(torch, num_classes: int = 1000, painseeker: bool = False):
  """torchvision's ResNet-18 (`painseeker=False`) or PainSeeker on its trunk.

  `forward(x_NCHW)` returns logits, or `(logits, beta_BxK)` for PainSeeker
  (Eqs. 1-3: beta_k = sigmoid(g(x_k)) / sum_j sigmoid(g(x_j)), logits = h(sum_k beta_k x_k)).
  """
  tnn = torch.nn

  class Block(tnn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(cout)
      self.relu = tnn.ReLU(inplace=True)
      self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(cout)
      self.downsample = None
      if stride != 1 or cin != cout:
        self.downsample = tnn.Sequential(
          tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
        )

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      r = x if self.downsample is None else self.downsample(x)
      return self.relu(y + r)

  class Net(tnn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = tnn.BatchNorm2d(64)
      self.relu = tnn.ReLU(inplace=True)
      self.maxpool = tnn.MaxPool2d(3, 2, 1)
      cin = 64
      for s, cout in enumerate((64, 128, 256, 512)):
        setattr(
          self,
          f"layer{s + 1}",
          tnn.Sequential(Block(cin, cout, 1 if s == 0 else 2), Block(cout, cout, 1)),
        )
        cin = cout
      if painseeker:
        self.region_score = tnn.Linear(512, 1)
      else:
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
      self.fc = tnn.Linear(512, num_classes)

    def features(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
      fmap = self.features(x)
      if not painseeker:
        return self.fc(torch.flatten(self.avgpool(fmap), 1))
      feats_BxKxD = torch.flatten(fmap, 2).transpose(1, 2)  # Eq. 1, regions in row-major order
      gates_BxK = torch.sigmoid(self.region_score(feats_BxKxD)[..., 0])
      beta_BxK = gates_BxK / gates_BxK.sum(-1, keepdim=True)  # Eq. 2
      return self.fc(torch.einsum("bk,bkd->bd", beta_BxK, feats_BxKxD)), beta_BxK  # Eq. 3

  return Net()


def total_loss(torch, logits_BxC, labels_B, beta_BxK, lambda_prsc: float, k_h: int, delta: float):
  """Cross-entropy + lambda * PRSC (Eqs. 5-6), as `painseeker_jax.losses.total_loss`."""
  ce = torch.nn.functional.cross_entropy(logits_BxC, labels_B)
  if beta_BxK is None:
    return ce
  sorted_BxK = torch.sort(beta_BxK, dim=-1, descending=True).values
  rest_Bx1 = sorted_BxK[:, k_h:].mean(-1, keepdim=True)
  prsc = torch.relu(delta - (sorted_BxK[:, :k_h] - rest_Bx1)).mean()
  return ce + lambda_prsc * prsc
