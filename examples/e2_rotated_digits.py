"""A C_8-equivariant CNN against a plain CNN on rotated digits rendered locally (no download).

Digits 0-8 are rasterised from the fonts matplotlib ships (several families and weights, random scale, shear,
shift and stroke noise); ``9`` is left out because a rotated ``6`` is a ``9``. Both networks are trained on upright
digits (rotations within +-10 degrees) and tested on upright digits and on digits rotated by a uniformly random
angle. The equivariant network (``equitp.e2``: R2Conv on regular C_8 fields, inner batch norm, ReLU, group pooling)
is invariant to rotations by multiples of 45 degrees by construction; the plain CNN of similar size is not.

Run: ``python examples/e2_rotated_digits.py [--epochs 3] [--train 6000] [--test 2000]`` (a couple of minutes on
two CPU cores).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from equitp import e2

SIZE = 28
CLASSES = list("012345678")


# ---------------------------------------------------------------------------------------------------- data
def render_glyphs(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """High-resolution glyphs ``(n, size, size)`` in [0, 1] and their labels, one per (digit, font, style)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    styles = [
        dict(family="DejaVu Sans", weight="normal", style="normal"),
        dict(family="DejaVu Sans", weight="bold", style="normal"),
        dict(family="DejaVu Sans", weight="normal", style="oblique"),
        dict(family="DejaVu Serif", weight="normal", style="normal"),
        dict(family="DejaVu Serif", weight="bold", style="italic"),
        dict(family="DejaVu Sans Mono", weight="normal", style="normal"),
        dict(family="DejaVu Sans Mono", weight="bold", style="normal"),
        dict(family="STIXGeneral", weight="normal", style="normal"),
        dict(family="STIXGeneral", weight="bold", style="italic"),
    ]
    glyphs, labels = [], []
    for label, ch in enumerate(CLASSES):
        for st in styles:
            fig = Figure(figsize=(1, 1), dpi=size)
            canvas = FigureCanvasAgg(fig)
            fig.text(0.5, 0.5, ch, ha="center", va="center", fontsize=size * 0.75 * 72 / size, **st)
            canvas.draw()
            img = np.asarray(canvas.buffer_rgba())[..., 0].astype(np.float32)
            glyphs.append(1.0 - img / 255.0)
            labels.append(label)
    return torch.tensor(np.stack(glyphs)), torch.tensor(labels)


def make_digits(glyphs, labels, n: int, max_angle: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 1, 28, 28)``: random glyph, rotation in ``[-max_angle, max_angle]``, scale, shear, shift."""
    idx = torch.randint(len(glyphs), (n,), generator=gen)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * max_angle
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    shear = (torch.rand(n, generator=gen) - 0.5) * 0.3
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.15
    c, s = torch.cos(angle), torch.sin(angle)
    # sampling grid: output point p -> source point A p + t (rotation, shear and inverse scale)
    a = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    sh = torch.eye(2).repeat(n, 1, 1)
    sh[:, 0, 1] = shear
    theta = torch.cat([(a @ sh) / scale[:, None, None], shift[:, :, None]], -1)
    grid = F.affine_grid(theta, (n, 1, SIZE, SIZE), align_corners=False)
    imgs = F.grid_sample(glyphs[idx][:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    imgs = imgs * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen))
    imgs = imgs + 0.05 * torch.randn(imgs.shape, generator=gen)
    return imgs.clamp(0, 1.2), labels[idx]


# ---------------------------------------------------------------------------------------------------- models
class C8Net(torch.nn.Module):
    """Equivariant features (C_8 regular fields), group pooling, global pooling: a rotation-invariant classifier."""

    def __init__(self, fields=(4, 8, 12), n_classes: int = len(CLASSES)):
        super().__init__()
        s = e2.rot2d(8)
        t0 = e2.FieldType(s, [s.trivial_repr])
        t1, t2, t3 = (e2.FieldType(s, [s.regular_repr] * n) for n in fields)
        self.block1 = torch.nn.Sequential(e2.R2Conv(t0, t1, 7, padding=3), e2.InnerBatchNorm(t1), e2.ReLU(t1))
        self.block2 = torch.nn.Sequential(e2.R2Conv(t1, t2, 5, padding=2), e2.InnerBatchNorm(t2), e2.ReLU(t2))
        self.block3 = torch.nn.Sequential(e2.R2Conv(t2, t3, 5, padding=2), e2.InnerBatchNorm(t3), e2.ReLU(t3))
        self.pool = e2.GroupPooling(t3)
        self.head = torch.nn.Sequential(torch.nn.Linear(len(t3), 48), torch.nn.ReLU(), torch.nn.Linear(48, n_classes))

    def forward(self, x):
        x = F.avg_pool2d(self.block1(x), 2)  # 28 -> 14 (2x2 cells: symmetric under quarter turns)
        x = F.avg_pool2d(self.block2(x), 2)  # 14 -> 7
        x = self.pool(self.block3(x))  # invariant channels
        return self.head(x.mean((-2, -1)))


class PlainNet(torch.nn.Module):
    def __init__(self, channels=(8, 14, 22), n_classes: int = len(CLASSES)):
        super().__init__()
        c1, c2, c3 = channels
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, c1, 7, padding=3), torch.nn.BatchNorm2d(c1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(c1, c2, 5, padding=2), torch.nn.BatchNorm2d(c2), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(c2, c3, 5, padding=2), torch.nn.BatchNorm2d(c3), torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Linear(c3, 48), torch.nn.ReLU(), torch.nn.Linear(48, n_classes))

    def forward(self, x):
        return self.head(self.features(x).mean((-2, -1)))


# ---------------------------------------------------------------------------------------------------- training
def train(model, x, y, epochs: int, batch: int, gen: torch.Generator, name: str) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * math.ceil(len(x) / batch))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), batch):
            b = perm[i:i + batch]
            out = model(x[b])
            loss = F.cross_entropy(out, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(b)
            correct += (out.argmax(1) == y[b]).sum().item()
            total += len(b)
        print(f"  {name} epoch {epoch + 1}: loss {loss_sum / total:.3f}, train accuracy {correct / total:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model, x, y, batch: int = 500) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    glyphs, labels = render_glyphs()
    x_train, y_train = make_digits(glyphs, labels, args.train, math.radians(10), gen)
    x_up, y_up = make_digits(glyphs, labels, args.test, math.radians(10), gen)
    x_rot, y_rot = make_digits(glyphs, labels, args.test, math.pi, gen)
    print(f"{len(glyphs)} glyphs; train {len(x_train)} upright digits, test {args.test} upright + {args.test} rotated")

    results = {}
    for name, model in (("C8-equivariant", C8Net()), ("plain CNN", PlainNet())):
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n_params} parameters")
        seconds = train(model, x_train, y_train, args.epochs, args.batch, gen, name)
        results[name] = (n_params, seconds, accuracy(model, x_up, y_up), accuracy(model, x_rot, y_rot))
    print()
    print(f"{'model':16s} {'params':>7s} {'train s':>8s} {'upright acc':>12s} {'rotated acc':>12s}")
    for name, (n, sec, up, rot) in results.items():
        print(f"{name:16s} {n:7d} {sec:8.0f} {up:12.3f} {rot:12.3f}")


if __name__ == "__main__":
    main()
