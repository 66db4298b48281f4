"""A synthetic infrared-visible pair, made by the package itself.

The scene: a street at dusk with a textured road and wall, trees, a window
grid and a light haze; people and a car are warm. The visible rendering has
colour and fine texture but the targets are dark and partly hidden by haze;
the thermal rendering shows the targets bright on a smooth background. It
is what a fusion method should combine: targets from the infrared, texture
and colour from the visible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_pair"]


def _noise(rng: np.random.Generator, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Fractal value noise in [0, 1]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        ys = np.linspace(0, cells, h, dtype=np.float32)
        xs = np.linspace(0, cells, w, dtype=np.float32)
        y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
        a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
        c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
        out += amp * ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy)
        total += amp
        amp *= 0.55
    return out / total


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return np.clip((1.0 - d) * 4.0, 0.0, 1.0)


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    m[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 1.0
    return m


def synthetic_pair(height: int = 384, width: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render the demo scene.

    Returns:
        (infrared (H, W) uint8, visible (H, W, 3) uint8).
    """
    rng = np.random.default_rng(seed)
    h, w = height, width
    horizon = int(h * 0.45)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    sky = np.zeros((h, w), np.float32)
    sky[:horizon] = 1.0
    ground = 1.0 - sky
    tex = _noise(rng, h, w, 6)
    fine = rng.random((h, w)).astype(np.float32)

    # Visible: dusk sky, textured wall with windows, cobbled road, trees.
    vis = np.zeros((h, w, 3), np.float32)
    vis += sky[..., None] * (np.array([0.35, 0.45, 0.65]) * (1 - 0.6 * yy[..., None]) + 0.1 * tex[..., None])
    wall = _rect(h, w, int(h * 0.12), horizon + 10, int(w * 0.55), w)
    cobble = (np.sin(np.arange(w) / 4.0)[None, :] * np.sin(np.arange(h) / 3.0)[:, None] > 0.2).astype(np.float32)
    road = ground * (0.22 + 0.12 * tex + 0.08 * cobble + 0.05 * fine)
    vis += road[..., None] * np.array([1.0, 0.95, 0.85])
    brick = 0.3 + 0.15 * ((np.arange(h)[:, None] // 8 + np.arange(w)[None, :] // 16) % 2) + 0.1 * tex
    vis = vis * (1 - wall[..., None]) + (wall * brick)[..., None] * np.array([0.75, 0.4, 0.3])
    for wy in range(int(h * 0.16), horizon - 20, 34):
        for wx in range(int(w * 0.58), w - 20, 40):
            win = _rect(h, w, wy, wy + 18, wx, wx + 22)
            lit = rng.random() < 0.4
            colour = np.array([0.95, 0.85, 0.5]) if lit else np.array([0.1, 0.12, 0.18])
            vis = vis * (1 - win[..., None]) + win[..., None] * colour
    trees = np.zeros((h, w), np.float32)
    for tx in (int(w * 0.12), int(w * 0.3)):
        crown = _ellipse(h, w, horizon - 40, tx, 45, 35) * (0.6 + 0.4 * _noise(rng, h, w, 4))
        trunk = _rect(h, w, horizon - 10, horizon + 25, tx - 4, tx + 4)
        trees = np.maximum(trees, np.maximum(crown, trunk))
    vis = vis * (1 - trees[..., None]) + trees[..., None] * (np.array([0.15, 0.3, 0.12]) * (0.7 + 0.6 * tex[..., None]))

    # Warm targets: three people and a car, dark in the visible image.
    targets = np.zeros((h, w), np.float32)
    people = [(int(w * 0.2), 0.9), (int(w * 0.42), 1.0), (int(w * 0.7), 0.85)]
    for px, heat in people:
        body = np.maximum(_ellipse(h, w, horizon + 50, px, 32, 9), _ellipse(h, w, horizon + 12, px, 8, 7))
        targets = np.maximum(targets, body * heat)
        vis = vis * (1 - body[..., None]) + body[..., None] * np.array([0.12, 0.11, 0.12])
    car = _rect(h, w, horizon + 70, horizon + 105, int(w * 0.45), int(w * 0.68))
    cabin = _rect(h, w, horizon + 52, horizon + 72, int(w * 0.5), int(w * 0.62))
    car_mask = np.maximum(car, cabin)
    vis = vis * (1 - car_mask[..., None]) + car_mask[..., None] * np.array([0.55, 0.08, 0.08]) * (0.8 + 0.2 * tex[..., None])
    engine = _rect(h, w, horizon + 75, horizon + 100, int(w * 0.6), int(w * 0.68))
    targets = np.maximum(targets, 0.75 * engine + 0.35 * car_mask)

    # Haze over the lower left hides part of the scene in the visible image.
    haze = np.clip(_ellipse(h, w, h * 0.75, w * 0.2, h * 0.35, w * 0.3) * 0.7, 0, 0.7)
    vis = vis * (1 - haze[..., None]) + haze[..., None] * 0.55
    vis = np.clip(vis + 0.01 * rng.standard_normal((h, w, 3)), 0, 1)

    # Thermal: cool sky, road warmer than the wall, trees cool, targets hot.
    therm = 0.15 * sky + ground * (0.45 + 0.08 * tex) + wall * 0.35 - trees * 0.12
    therm = therm * (1 - targets) + targets * (0.75 + 0.25 * targets)
    therm = np.clip(therm + 0.015 * rng.standard_normal((h, w)), 0, 1)
    return (np.rint(therm * 255).astype(np.uint8), np.rint(vis * 255).astype(np.uint8))
