"""A synthetic, text-conditioned video world with known ground truth per frame.

One coloured shape (square, circle or triangle, 6x6 pixels) moves on a black 16x16 frame in one of four
directions at a slow or fast speed and bounces off the grey walls at its border. The prompt names all four
attributes ("a red square moving left fast"); the start position is the only thing the prompt leaves open, so a
generator must pick it and then keep shape, colour, speed and direction consistent for as long as the video
runs -- exactly what exposure bias erodes.

Everything is a pure function of a seed (a `torch.Generator` draws the scene attributes), rendered
analytically with a one-pixel anti-aliased edge from signed distances, so positions are sub-pixel and the
ground truth (shape, colour, centre of every frame) is exact.

Frames are [3, T, H, W] (batches [B, 3, T, H, W]) in [-1, 1], black background = -1, like Wan's pixel space.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.1, 0.9, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "cyan": (0.1, 0.9, 0.95),
    "magenta": (0.95, 0.2, 0.9),
}
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0),
                                               "up": (0.0, -1.0), "down": (0.0, 1.0)}
# pixels per frame: slow enough that a 12-frame training video mostly keeps its prompted direction (the centre
# has 10 pixels of room), so "left" is visible in the data and not averaged away by bounces
SPEEDS: dict[str, float] = {"slow": 0.5, "fast": 1.0}


class WorldError(ValueError):
    """A scene attribute outside the world's vocabulary."""


@dataclass(frozen=True)
class WorldSpec:
    """Frame geometry. `size` is the half extent of every shape in pixels (a square is 2*size wide).

    wall: width in pixels of the grey border the shape bounces off (`wall_level` = its brightness in [0, 1]).
    Why draw the walls: a Wan transformer has no absolute position embedding (RoPE is relative), so without
    visible walls it cannot tell where a bounce must happen or where "the right half" is.
    start: "half" = the start centre lies in the half the object moves away from (see `sample_scene`),
    "uniform" = anywhere.
    clock: a ticker on the top wall -- one bright pixel that steps one pixel to the right every frame (wrapping
    after the inner width; its position at frame 0 is drawn per scene). Why: without it the world is
    time-reversible (a video played backwards is a valid video of the opposite direction), so nothing but the
    prompt's direction word tells a model which way time runs, and a bidirectional model can all but ignore
    that word (docs/toy_world.md). The ticker is on the wall, which the metrics never look at.
    """

    height: int = 16
    width: int = 16
    size: float = 3.0
    wall: int = 1
    wall_level: float = 0.3
    start: str = "half"
    fps: int = 8
    clock: bool = False
    clock_level: float = 1.0

    def __post_init__(self) -> None:
        need = int(4 * self.size + 2 * self.wall)
        if self.height < need or self.width < need:
            raise WorldError(f"frame {self.height}x{self.width} is too small for shapes of half size {self.size} "
                             f"inside walls of {self.wall}: use frames of at least {need} pixels per side")
        if self.start not in ("half", "uniform"):
            raise WorldError(f"start must be 'half' or 'uniform', got {self.start!r}")
        if self.clock and not self.wall:
            raise WorldError("clock=True needs a wall to draw the ticker on (wall >= 1)")

    @property
    def clock_period(self) -> int:
        """Frames until the ticker is back where it started: the inner width of the top wall."""
        return self.width - 2 * self.wall

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_lo, x_hi), (y_lo, y_hi)): the range of centres that keeps the shape inside the walls."""
        m = self.size + self.wall
        return (m, self.width - m), (m, self.height - m)

    def walls(self) -> torch.Tensor:
        """[H, W] 1 on the wall pixels, 0 inside."""
        w = torch.ones(self.height, self.width)
        if self.wall:
            w[self.wall:-self.wall, self.wall:-self.wall] = 0
        return w


@dataclass(frozen=True)
class Scene:
    """One video of the world: the prompt's four attributes plus the start centre (x, y) in pixels (and, in a
    world with a clock, the ticker's position at frame 0)."""

    shape: str
    colour: str
    direction: str
    speed: str
    x: float
    y: float
    clock: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("shape", self.shape, SHAPES), ("colour", self.colour, COLOURS),
                                     ("direction", self.direction, DIRECTIONS), ("speed", self.speed, SPEEDS)):
            if value not in allowed:
                raise WorldError(f"unknown {name} {value!r}; the world knows {sorted(allowed)}")

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed}"

    @property
    def object_prompt(self) -> str:
        """The prompt without its motion words ("a red square"): what motion guidance contrasts with."""
        return f"a {self.colour} {self.shape}"

    @property
    def velocity(self) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        s = SPEEDS[self.speed]
        return dx * s, dy * s

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLOURS[self.colour]


def bounce(p: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Fold unconstrained positions into [lo, hi] as a ball reflecting off both walls (a triangle wave)."""
    span = hi - lo
    u = torch.remainder(p - lo, 2 * span)
    return lo + torch.where(u > span, 2 * span - u, u)


def trajectory(start: tuple[float, float], velocity: tuple[float, float], frames: int, spec: WorldSpec,
               first_frame: int = 0) -> torch.Tensor:
    """Centres [T, 2] (x, y) of frames first_frame..first_frame+T-1 for a start centre and a velocity (px/frame)."""
    t = torch.arange(first_frame, first_frame + frames, dtype=torch.float64)
    (xl, xh), (yl, yh) = spec.bounds
    x = bounce(start[0] + velocity[0] * t, xl, xh)
    y = bounce(start[1] + velocity[1] * t, yl, yh)
    return torch.stack([x, y], dim=1).float()


def scene_trajectory(scene: Scene, frames: int, spec: WorldSpec) -> torch.Tensor:
    """Ground-truth centres [T, 2] of a scene."""
    return trajectory((scene.x, scene.y), scene.velocity, frames, spec)


def scene_at(scene: Scene, frame: int, spec: WorldSpec) -> Scene:
    """The scene as it stands at `frame`: the centre there and the direction it moves in after its bounces, so
    `scene_at(s, t).prompt` describes how a video of `s` goes on from frame t (what continuing it should follow)."""
    t = torch.tensor([float(frame), frame + 1e-3], dtype=torch.float64)
    (xl, xh), (yl, yh) = spec.bounds
    vx, vy = scene.velocity
    x, y = bounce(scene.x + vx * t, xl, xh), bounce(scene.y + vy * t, yl, yh)
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    direction = ("right" if dx > 0 else "left") if vx else ("down" if dy > 0 else "up")
    clock = (scene.clock + frame) % spec.clock_period if spec.clock else 0
    return Scene(scene.shape, scene.colour, direction, scene.speed, float(x[0]), float(y[0]), clock)


def shape_sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, size: float) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of a shape of half extent `size` centred at the origin.

    The triangle points up, apex at (0, -size), base at y = +size from x = -size to +size.
    """
    if shape == "square":
        qx, qy = dx.abs() - size, dy.abs() - size
        outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
        return outside + torch.maximum(qx, qy).clamp(max=0)
    if shape == "circle":
        return torch.sqrt(dx ** 2 + dy ** 2) - size
    if shape == "triangle":
        # intersection of three half planes; the slanted edges have normals (+-2, -1)/sqrt(5)
        base = dy - size
        slant = (2 * dx.abs() - dy - size) / 5 ** 0.5
        return torch.maximum(base, slant)
    raise WorldError(f"unknown shape {shape!r}; the world knows {list(SHAPES)}")


def shape_centroid_offset(shape: str, size: float) -> tuple[float, float]:
    """Offset (x, y) from a shape's box centre to its area centroid (only the triangle's differs: +size/3 in y)."""
    return (0.0, size / 3.0) if shape == "triangle" else (0.0, 0.0)


def coverage(shape: str, centres: torch.Tensor, spec: WorldSpec) -> torch.Tensor:
    """Anti-aliased coverage [T, H, W] in [0, 1] of a shape whose box centres are `centres` [T, 2] (x, y).

    Pixel (i, j) has its centre at (j + 0.5, i + 0.5); the edge is a one-pixel linear ramp of the distance.
    """
    ys = torch.arange(spec.height, dtype=torch.float32) + 0.5
    xs = torch.arange(spec.width, dtype=torch.float32) + 0.5
    dx = xs.view(1, 1, -1) - centres[:, 0].view(-1, 1, 1)
    dy = ys.view(1, -1, 1) - centres[:, 1].view(-1, 1, 1)
    return (0.5 - shape_sdf(shape, dx, dy, spec.size)).clamp(0.0, 1.0)


def render(scene: Scene, frames: int, spec: WorldSpec | None = None) -> torch.Tensor:
    """The video [3, T, H, W] in [-1, 1] of a scene: black inside grey walls, the shape composited on top."""
    spec = spec or WorldSpec()
    alpha = coverage(scene.shape, scene_trajectory(scene, frames, spec), spec).unsqueeze(0)  # [1, T, H, W]
    rgb = torch.tensor(scene.rgb).view(3, 1, 1, 1)
    back = (spec.walls() * spec.wall_level).expand(3, frames, -1, -1)
    if spec.clock:
        back = back.clone()
        t = torch.arange(frames)
        back[:, t, 0, spec.wall + (scene.clock + t) % spec.clock_period] = spec.clock_level
    return (back * (1 - alpha) + rgb * alpha) * 2.0 - 1.0


def _pick(options, g: torch.Generator):
    keys = list(options)
    return keys[int(torch.randint(len(keys), (1,), generator=g))]


def sample_scene(g: torch.Generator, spec: WorldSpec | None = None) -> Scene:
    """Draw a scene: shape, colour, direction, speed uniformly; the start centre uniformly inside the frame
    across the motion and in the half the object moves away from along it ("moving left" starts right of the
    middle). Why the half: with a start anywhere, every frame's position is uniform whatever the direction, so
    a direction word would only show in frame-to-frame correlations; this way it also shows in where the
    object is, which the model learns first.

    Draw order (fixed, so a seed always gives the same scenes): shape, colour, direction, speed, x, y.
    """
    spec = spec or WorldSpec()
    shape, colour, direction, speed = (_pick(SHAPES, g), _pick(COLOURS, g), _pick(DIRECTIONS, g),
                                       _pick(SPEEDS, g))
    u = torch.rand(2, generator=g, dtype=torch.float64)
    centre = []
    for (lo, hi), d, ui in zip(spec.bounds, DIRECTIONS[direction], u.tolist()):
        mid = (lo + hi) / 2
        if spec.start == "half":
            lo, hi = (mid, hi) if d < 0 else (lo, mid) if d > 0 else (lo, hi)
        centre.append(lo + (hi - lo) * ui)
    clock = int(torch.randint(0, spec.clock_period, (1,), generator=g)) if spec.clock else 0  # drawn last
    return Scene(shape, colour, direction, speed, centre[0], centre[1], clock)


def sample_batch(batch: int, frames: int, seed: int | torch.Generator, spec: WorldSpec | None = None
                 ) -> tuple[torch.Tensor, list[Scene]]:
    """`batch` scenes and their videos [B, 3, T, H, W] in [-1, 1] (deterministic for a seed)."""
    spec = spec or WorldSpec()
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    scenes = [sample_scene(g, spec) for _ in range(batch)]
    return torch.stack([render(s, frames, spec) for s in scenes]), scenes


def all_prompts() -> list[str]:
    """Every prompt of the world (3 shapes x 6 colours x 4 directions x 2 speeds = 144)."""
    return [Scene(s, c, d, v, 0.0, 0.0).prompt for s in SHAPES for c in COLOURS for d in DIRECTIONS for v in SPEEDS]
