"""The embedded dataset: two shapes, one above the other; the class is which shape sits on top of which.

Class `disc_above_square` and class `square_above_disc` hold the same two shapes and differ only in their
vertical order, so a network must see both shapes, tell them apart and relate their positions: a bag of local
features solves at most half the classes, and a small receptive field or too few channels falls short. The
order is vertical because the training augmentation mirrors images left-right, which must not change a label.
Everything else is random per image: background colour, low-frequency blotches and stripes, shape colours,
stripe texture inside the shapes, sizes, gap, horizontal offset, position, small distractor blobs, pixel noise.

Rendering uses only correctly rounded float32 operations (+, -, *, /, sqrt, floor, min, max) on numbers drawn
with `torch.rand` from a CPU generator, so one seed gives bit-identical images on every machine.
"""

import torch

from ablate.errors import ConfigError

# Every shape is mirror-symmetric (a left-right flip keeps its identity); the first five make the default
# 20 classes. Each is drawn from a distance-like function f of the offset (u, v) from its centre in units of
# its radius (v grows downwards): inside where f <= 1 and |grad f| is about 1, so (1 - f) * radius is the
# distance to the edge, which gives a one-pixel anti-aliased edge at any image size.
SHAPES = ("disc", "square", "triangle", "plus", "ring", "diamond", "frame", "cross", "wedge")
MAX_CLASSES = len(SHAPES) * (len(SHAPES) - 1)

# Fractions of the image side, or of full intensity for colours.
_MARGIN = 0.03  # kept clear around the pair
_DISTRACTOR_RADIUS = (0.03, 0.06)  # 1-2 px blobs at 32 px: smaller than any class shape
# Background base colours stay muted so that the shapes, not the background, carry most of the image's
# variance: with backgrounds spanning the full range, nets without BN sat at chance for the whole default budget.
_BACKGROUND = (0.35, 0.65)
_BLOTCH_AMPLITUDE = 0.15  # colour offsets of a 4x4 grid interpolated over the image, times `texture`
_BACKGROUND_STRIPES = 0.15  # largest stripe amplitude on the background, times `texture`
_SHAPE_STRIPES = 0.4  # largest share of a shape's colour darkened by its stripes, times `texture`
_ROWS_PER_CHUNK = 1024  # images rendered at once: bounds the memory of the float32 temporaries
_SQRT_HALF = 0.70710678


def load(
    *,
    image_size: int,
    seed: int = 0,
    num_classes: int = 20,
    train_size: int = 5000,
    val_size: int = 1000,
    test_size: int = 2000,
    shape_size: tuple[float, float] = (0.3, 0.44),
    gap: tuple[float, float] = (0.02, 0.06),
    contrast: float = 0.3,
    texture: float = 0.5,
    distractors: int = 2,
    noise_std: float = 4.0,
) -> dict:
    """The three splits as uint8 [N, 3, image_size, image_size] with balanced int64 labels.

    Rendered on every call, never cached on disk: 10k images take about two seconds. Each split has its own
    random stream derived from `seed`, so changing one split's size leaves the others identical.
    """
    knobs = dict(
        num_classes=num_classes,
        shape_size=shape_size,
        gap=gap,
        contrast=contrast,
        texture=texture,
        distractors=distractors,
        noise_std=noise_std,
    )
    check(
        image_size=image_size,
        seed=seed,
        sizes=dict(train_size=train_size, val_size=val_size, test_size=test_size),
        **knobs,
    )
    knobs.update(shape_size=_pair("shape_size", shape_size), gap=_pair("gap", gap))
    splits = {}
    for index, (split, size) in enumerate((("train", train_size), ("val", val_size), ("test", test_size))):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        splits[split] = generate(size, generator=generator, image_size=image_size, **knobs)
    return {**splits, "classes": class_names(num_classes)}


def check(*, image_size, seed, sizes, num_classes, shape_size, gap, contrast, texture, distractors, noise_std):
    """One line per bad key, naming the fix, before anything is generated."""
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"data.seed={seed}: must be an integer >= 0; e.g. data.seed=0")
    if not _is_int(num_classes) or not 2 <= num_classes <= MAX_CLASSES:
        raise ConfigError(
            f"data.num_classes={num_classes}: the generator makes 2 to {MAX_CLASSES} classes "
            f"(ordered pairs of {len(SHAPES)} shapes); e.g. data.num_classes=20"
        )
    for key, size in sizes.items():
        if not _is_int(size) or size <= 0:
            raise ConfigError(f"data.{key}={size}: must be a positive number of images; e.g. data.{key}=1000")
    if not _is_int(image_size) or image_size < 8:
        raise ConfigError(
            f"data.resize={image_size}: synthetic images need a side of at least 8 px; e.g. data.resize=null"
        )
    size_low, size_high = _pair("shape_size", shape_size)
    if not 0 < size_low <= size_high <= 0.45:
        raise ConfigError(
            f"data.shape_size=[{size_low},{size_high}]: shape diameters are fractions of the image side with "
            "0 < min <= max <= 0.45 (two must fit one above the other); e.g. data.shape_size=[0.3,0.44]"
        )
    gap_low, gap_high = _pair("gap", gap)
    room = 1 - 2 * _MARGIN - 2 * size_high
    if not 0 <= gap_low <= gap_high <= room + 1e-9:
        raise ConfigError(
            f"data.gap=[{gap_low},{gap_high}]: the vertical gap between the shapes, a fraction of the image side, "
            f"needs 0 <= min <= max <= {room:.2f} with shape_size max {size_high}; e.g. data.gap=[0.02,{room:.2f}]"
        )
    if not 0 < contrast <= _BACKGROUND[0]:
        raise ConfigError(
            f"data.contrast={contrast}: the least per-channel difference between a shape and the background "
            f"(0-1 scale) must be in (0, {_BACKGROUND[0]}] as backgrounds span {_BACKGROUND}; e.g. data.contrast=0.3"
        )
    if not 0 <= texture <= 2:
        raise ConfigError(
            f"data.texture={texture}: the scale of stripes and blotches must be in [0, 2]; e.g. data.texture=0.5"
        )
    if not _is_int(distractors) or distractors < 0:
        raise ConfigError(f"data.distractors={distractors}: must be an integer >= 0; e.g. data.distractors=2")
    if not noise_std >= 0:
        raise ConfigError(
            f"data.noise_std={noise_std}: pixel noise on the 0-255 scale must be >= 0; e.g. data.noise_std=4"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(key: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.{key}={value}: must be a [min, max] pair of numbers; e.g. data.{key}=[0.2,0.3]"
        ) from None
    return low, high


def class_names(num_classes: int) -> list[str]:
    """`top_above_bottom` for the first `num_classes` ordered pairs; a pair's two orders are adjacent classes."""
    return [f"{SHAPES[top]}_above_{SHAPES[bottom]}" for top, bottom in class_pairs(num_classes)]


def class_pairs(num_classes: int) -> list[tuple[int, int]]:
    """(top shape, bottom shape) per class, using as few shapes as possible: shapes 0-1, 0-2, 1-2, 0-3 ..."""
    pairs = []
    for high in range(1, len(SHAPES)):
        for low in range(high):
            pairs += [(low, high), (high, low)]
    return pairs[:num_classes]


def generate(
    size: int,
    *,
    generator: torch.Generator,
    image_size: int,
    num_classes: int,
    shape_size: tuple[float, float],
    gap: tuple[float, float],
    contrast: float,
    texture: float,
    distractors: int,
    noise_std: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` images (uint8 [N, 3, S, S]) and labels (int64 [N], each class `size // num_classes` or one more times)."""

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator)

    labels = (torch.arange(size) % num_classes)[torch.randperm(size, generator=generator)]
    pairs = torch.tensor(class_pairs(num_classes))[labels]
    # Geometry in fractions of the image side; radii are half the configured diameters.
    radius_top = uniform(shape_size[0] / 2, shape_size[1] / 2, size)
    radius_bottom = uniform(shape_size[0] / 2, shape_size[1] / 2, size)
    offset_y = radius_top + radius_bottom + uniform(gap[0], gap[1], size)
    # A horizontal offset of at most half the vertical one keeps "above" unambiguous.
    offset_x = uniform(-0.5, 0.5, size) * offset_y
    left = torch.minimum(-radius_top, offset_x - radius_bottom)
    right = torch.maximum(radius_top, offset_x + radius_bottom)
    top_x = _place(uniform(0, 1, size), _MARGIN - left, 1 - _MARGIN - right)
    top_y = _place(uniform(0, 1, size), _MARGIN + radius_top, 1 - _MARGIN - offset_y - radius_bottom)
    layers = [
        _shape(pairs[:, 0], top_x, top_y, radius_top, uniform, texture),
        _shape(pairs[:, 1], top_x + offset_x, top_y + offset_y, radius_bottom, uniform, texture),
    ]
    # Distractors are painted first, so they never hide a class shape.
    for _ in range(distractors):
        kind = (uniform(0, 1, size) * len(SHAPES)).floor().long().clamp_(max=len(SHAPES) - 1)
        layers.insert(
            0,
            _shape(
                kind, uniform(0, 1, size), uniform(0, 1, size), uniform(*_DISTRACTOR_RADIUS, size), uniform, texture
            ),
        )
    background = dict(
        colour=uniform(*_BACKGROUND, size, 3),
        blotches=uniform(-_BLOTCH_AMPLITUDE, _BLOTCH_AMPLITUDE, size, 3, 4, 4) * texture,
        stripe_direction=uniform(-1, 1, size, 2),
        stripe_period=uniform(0.08, 0.3, size),
        stripe_amplitude=uniform(0, _BACKGROUND_STRIPES, size) * texture,
    )
    for layer in layers:
        layer["colour"] = _contrasting(background["colour"], contrast, uniform)

    images = torch.empty(size, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, size, _ROWS_PER_CHUNK):
        rows = slice(start, min(start + _ROWS_PER_CHUNK, size))
        chunk = _render(
            {key: value[rows] for key, value in background.items()},
            [{key: value[rows] for key, value in layer.items()} for layer in layers],
            image_size,
        )
        # Uniform noise with standard deviation noise_std (0-255 scale).
        noise = (torch.rand(chunk.shape, generator=generator) - 0.5) * (noise_std / 255 * 12**0.5)
        images[rows] = ((chunk + noise).clamp_(0, 1) * 255 + 0.5).floor().to(torch.uint8)
    return images, labels


def _place(fraction, low, high):
    """A point at `fraction` of [low, high]; the middle when the interval is empty."""
    return torch.where(high > low, low + fraction * (high - low), (low + high) / 2)


def _shape(kind, x, y, radius, uniform, texture) -> dict:
    size = kind.shape[0]
    return dict(
        kind=kind,
        x=x,
        y=y,
        radius=radius,
        stripe_direction=uniform(-1, 1, size, 2),
        stripe_period=uniform(0.05, 0.15, size),
        stripe_amplitude=uniform(0, _SHAPE_STRIPES, size) * texture,
    )


def _contrasting(base, contrast, uniform):
    """Random colours at least `contrast` away from `base` in every channel, so no shape blends in."""
    fraction = uniform(0, 1, *base.shape)
    return torch.where(base < 0.5, base + contrast + fraction * (1 - contrast - base), fraction * (base - contrast))


def _render(background: dict, layers: list[dict], image_size: int) -> torch.Tensor:
    """Float images in [0, 1]: the background, then each layer composited with its anti-aliased coverage."""
    size = background["colour"].shape[0]
    # Pixel centres in fractions of the image side.
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    ys, xs = coords.view(1, -1, 1), coords.view(1, 1, -1)
    image = background["colour"].view(size, 3, 1, 1) + _upsample(background["blotches"], coords)
    image = image + (
        background["stripe_amplitude"].view(size, 1, 1, 1)
        * _stripes(xs, ys, background["stripe_direction"], background["stripe_period"]).unsqueeze(1)
    )
    full = (size, image_size, image_size)
    for layer in layers:
        radius = layer["radius"].view(size, 1, 1)
        u = ((xs - layer["x"].view(size, 1, 1)) / radius).expand(full)
        v = ((ys - layer["y"].view(size, 1, 1)) / radius).expand(full)
        coverage = ((1 - _shape_function(layer["kind"], u, v)) * (radius * image_size) + 0.5).clamp(0, 1)
        shade = 1 - layer["stripe_amplitude"].view(size, 1, 1) * _stripes(
            xs, ys, layer["stripe_direction"], layer["stripe_period"]
        )
        fill = layer["colour"].view(size, 3, 1, 1) * shade.unsqueeze(1)
        image = image * (1 - coverage.unsqueeze(1)) + fill * coverage.unsqueeze(1)
    return image.clamp(0, 1)


def _stripes(xs, ys, direction, period):
    """A triangle wave in [0, 1] along `direction` with `period` (fraction of the side): [N, S, S]."""
    size = direction.shape[0]
    dx, dy = direction[:, 0], direction[:, 1]
    length = (dx * dx + dy * dy).sqrt().clamp(min=1e-3)
    along = (xs * (dx / length).view(size, 1, 1) + ys * (dy / length).view(size, 1, 1)) / period.view(size, 1, 1)
    return ((along - along.floor()) * 2 - 1).abs()


def _upsample(grid, coords):
    """Bilinear interpolation of a [N, C, G, G] grid spanning the image at the pixel centres `coords`.

    Written out rather than F.interpolate so that it stays bit-identical across CPUs.
    """
    cells = grid.shape[-1]
    position = coords * (cells - 1)
    low = position.floor().long().clamp(max=cells - 2)
    weight = position - low
    rows = grid.index_select(2, low) * (1 - weight).view(1, 1, -1, 1) + grid.index_select(2, low + 1) * weight.view(
        1, 1, -1, 1
    )
    return rows.index_select(3, low) * (1 - weight) + rows.index_select(3, low + 1) * weight


def _shape_function(kind, u, v):
    """Each image's f(u, v) for its own shape kind, computed only on the images of each kind."""
    inside = torch.empty_like(u)
    for index, name in enumerate(SHAPES):
        rows = kind == index
        if rows.any():
            inside[rows] = _SHAPE_FUNCTIONS[name](u[rows], v[rows])
    return inside


def _plus(u, v):
    across, along = u.abs(), v.abs()
    return torch.minimum(torch.maximum(across + 0.7, along), torch.maximum(along + 0.7, across))


def _triangle(u, v):
    # Apex at v = -1, base at v = 0.75; 1.14 = |(1, -0.55)| turns the slanted sides into distances.
    return torch.maximum(v / 0.75, 1 + (u.abs() - 0.55 * (v + 1)) / 1.14)


def _ring(u, v):
    distance = (u * u + v * v).sqrt()
    return torch.maximum(distance, 1.5 - distance)  # inner radius 0.5


def _frame(u, v):
    extent = torch.maximum(u.abs(), v.abs())
    return torch.maximum(extent + 0.2, 1.4 - extent)  # half-sides 0.8 outside, 0.4 inside


_SHAPE_FUNCTIONS = {
    "disc": lambda u, v: (u * u + v * v).sqrt(),
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) + 0.2,  # half-side 0.8: about the disc's area
    "triangle": _triangle,
    "plus": _plus,
    "ring": _ring,
    "diamond": lambda u, v: 1 + (u.abs() + v.abs() - 1.1) * _SQRT_HALF,
    "frame": _frame,
    "cross": lambda u, v: _plus((u + v) * _SQRT_HALF, (v - u) * _SQRT_HALF),
    "wedge": lambda u, v: _triangle(u, -v),  # the triangle upside down
}
