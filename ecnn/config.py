"""Options, as frozen dataclasses.

Each field says whether it *shapes the bitstream* (changes the bytes written)
or only affects the run. Decoding needs no options: everything that shapes the
bitstream is stored in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from ecnn.errors import InvalidOption


EFFORTS = ("fast", "balanced", "best")


@dataclass(frozen=True)
class Effort:
    """How hard the encoder searches for small models: the policy behind ``EncodeConfig.effort``.

    Every field shapes the bitstream (another choice writes other bytes; any
    decoder reads them all). spec/CODING.md section 11.8 describes the three
    named policies :attr:`BEST`, :attr:`BALANCED` and :attr:`FAST`.

    Attributes:
        name: the name ``EncodeConfig.effort`` uses (one of :data:`EFFORTS`).
        rowcol: cost row/column-context plans (``rowcol``, ``ctx`` model 4) at all.
        rowcol_classes: the one class count (row classes, column classes) planned
            on every row; None ranks every affordable class count on a sample of
            rows and plans the best few on every row.
        sign_classes: the sign class counts tried for a ``ctx`` model 4 with signs apart.
        lanes: cost the sparse-lane model (``ctx`` model 1) at all.
        lanes_min_zeros: ... only where at least this share of the symbols is 0.
        lanes_bound: fit lanes on all lanes only when the sample's estimate beats
            the cheapest candidate so far.
        head_classes: the class counts planned on every row for the ``blocks``
            heads of ``fields``; None ranks the class counts on a sample first.
        head_early_stop: stop the search for the head's mantissa bits once the
            estimate has grown twice in a row.
        planes_with_fields: try byte planes for exact float matrices where
            ``fields`` applies.
        planes_probe: byte planes are searched in full only where the fast search's
            estimate, less this share, could beat ``fields`` (0: where the estimate
            itself could).
        codebook_probe: try ``codebook`` only where a sample shows at most this
            many distinct values.

    Example:
        >>> Effort.of("balanced").rowcol_classes
        (8, 8)
        >>> Effort.of(Effort.FAST) is Effort.FAST
        True
    """

    name: str
    rowcol: bool = True
    rowcol_classes: tuple[int, int] | None = None
    sign_classes: tuple[int, ...] = (1, 2, 4, 8)
    lanes: bool = True
    lanes_min_zeros: float = 0.25
    lanes_bound: bool = False
    head_classes: tuple[tuple[int, int], ...] | None = None
    head_early_stop: bool = False
    planes_with_fields: bool = True
    planes_probe: float = 0.0
    codebook_probe: int = 4096

    # The named policies (set below the class).
    BEST: ClassVar["Effort"]
    BALANCED: ClassVar["Effort"]
    FAST: ClassVar["Effort"]

    @classmethod
    def of(cls, x: "str | Effort") -> "Effort":
        """The policy named ``x`` (one of :data:`EFFORTS`), or ``x`` itself if it is one.

        Raises:
            InvalidOption: an unknown name.
        """
        if isinstance(x, Effort):
            return x
        got = _EFFORT_BY_NAME.get(x) if isinstance(x, str) else None
        if got is None:
            raise InvalidOption(f"effort must be one of {', '.join(EFFORTS)}, not {x!r}")
        return got


Effort.BEST = Effort("best", lanes_bound=True)  # a lanes plan whose sample loses is not fitted on all lanes
Effort.BALANCED = Effort(
    "balanced",
    rowcol_classes=(8, 8),
    sign_classes=(1,),
    lanes_min_zeros=0.5,
    lanes_bound=True,
    head_classes=((1, 1), (8, 8)),
    head_early_stop=True,
    planes_with_fields=False,
    codebook_probe=256,
)
Effort.FAST = replace(Effort.BALANCED, name="fast", rowcol=False, lanes=False, head_classes=((1, 1),))
_EFFORT_BY_NAME = {e.name: e for e in (Effort.FAST, Effort.BALANCED, Effort.BEST)}


@dataclass(frozen=True)
class EncodeConfig:
    """How to encode tensors.

    Attributes:
        bits: quantize float weights to this many bits (symmetric, step =
            max|x| / (2**(bits-1) - 1) for the tensor; see ``per_row``). Shapes the bitstream.
        step: quantize float weights with this fixed step. Shapes the bitstream.
        lossless: store every tensor bit-exactly. Shapes the bitstream.
        exact: glob patterns (fnmatch) of tensor names to keep bit-exact even
            when quantizing. Shapes the bitstream.
        steps: per-tensor quantization steps, ``{name: step}`` (a mapping, kept
            as sorted pairs); these tensors
            are quantized with their own step whatever ``bits``/``step`` say
            (e.g. weights already on a grid after ``ecnn.train``). Shapes the bitstream.
        min_ndim: float tensors with fewer dimensions (biases, norms) are kept
            exact. Shapes the bitstream.
        per_row: with ``bits``, give each row (output channel) its own step,
            the finest of the tensor's step times 2**-k * (16 - r) / 16 that keeps
            the row within the same symbol range, so that a few outliers do not
            coarsen every row. Shapes the bitstream.
        chunk: symbols per independently decodable chunk. Shapes the bitstream.
        align: payload alignment in bytes (power of two). Shapes the bitstream.
        format_minor: the highest Format_Minor whose features the encoder may
            use: 4 (the default) allows the compact header of format 1.4
            (written where it is smaller than the MessagePack one), 3 and 2
            keep the MessagePack header and allow the ``rans`` heads of format
            1.2, 1 the ``ctx`` stream coder and ``fields`` of format 1.1 (files
            that 1.1 decoders read), 0 writes files that every 1.0 decoder
            reads. Stored files need 1.3 whatever this says. Shapes the bitstream.
        effort: how hard the encoder searches for small models, one of
            :data:`EFFORTS`. ``"best"`` (the default) tries every context model
            and class count; ``"balanced"`` plans one grid of 8 x 8 row and
            column classes per stream, tries the sparse-lane model only where
            most symbols are 0, and skips byte planes for float matrices;
            ``"fast"`` codes every stream with one table of its own (order 0).
            Lower efforts encode several times faster and write somewhat larger
            files (spec/CODING.md section 11.8, bench/RESULTS.md); decoding
            needs nothing new. :attr:`policy` is the :class:`Effort` it names,
            with every choice as a field. Shapes the bitstream.
        version: version of this config's meaning; bumps when a default changes.
    """

    bits: int | None = None
    step: float | None = None
    lossless: bool = False
    exact: tuple[str, ...] = ()
    steps: tuple[tuple[str, float], ...] = ()
    min_ndim: int = 2
    per_row: bool = True
    chunk: int = 1 << 20
    align: int = 8
    format_minor: int = 4
    effort: str = "best"
    version: int = field(default=1, repr=False)

    def __post_init__(self):
        chosen = sum([self.bits is not None, self.step is not None, bool(self.lossless)])
        if chosen > 1:
            raise InvalidOption("choose at most one of bits, step and lossless")
        if self.bits is not None and (type(self.bits) is not int or not 2 <= self.bits <= 16):
            raise InvalidOption(f"bits must be an integer in [2, 16], got {self.bits!r}")
        if self.step is not None and not (isinstance(self.step, (int, float)) and 0 < self.step < float("inf")):
            raise InvalidOption(f"step must be a positive finite number, got {self.step!r}")
        if not 4096 <= self.chunk <= 1 << 30:
            raise InvalidOption(f"chunk must be in [4096, 2**30], got {self.chunk}")
        if self.align < 1 or self.align > 4096 or self.align & (self.align - 1):
            raise InvalidOption(f"align must be a power of two in [1, 4096], got {self.align}")
        if type(self.format_minor) is not int or not 0 <= self.format_minor <= 4:
            raise InvalidOption(f"format_minor must be 0, 1, 2, 3 or 4, got {self.format_minor!r}")
        if not isinstance(self.effort, str):
            raise InvalidOption(f"effort must be one of {', '.join(EFFORTS)}, not {self.effort!r}")
        Effort.of(self.effort)  # a known name
        if isinstance(self.exact, str):
            object.__setattr__(self, "exact", (self.exact,))
        steps = tuple(sorted(dict(self.steps).items()))
        for name, s in steps:
            if not (isinstance(s, (int, float)) and 0 < s < float("inf")):
                raise InvalidOption(f"step for {name!r} must be a positive finite number, got {s!r}")
        object.__setattr__(self, "steps", steps)
        if chosen and steps and self.lossless:
            raise InvalidOption("per-tensor steps cannot be combined with lossless")

    @property
    def policy(self) -> Effort:
        """The :class:`Effort` policy that :attr:`effort` names."""
        return Effort.of(self.effort)

    @property
    def quantizes(self) -> bool:
        return self.bits is not None or self.step is not None or bool(self.steps)

    def step_for(self, name: str) -> float | None:
        """The fixed step for a tensor (per-tensor first, then ``step``), if any."""
        return dict(self.steps).get(name, self.step)


DEFAULT_BITS = 8


def make_config(bits=None, step=None, lossless=False, **kw) -> EncodeConfig:
    """Build an EncodeConfig; with no choice given, quantize to 8 bits."""
    if bits is None and step is None and not lossless and not kw.get("steps"):
        bits = DEFAULT_BITS
    return EncodeConfig(bits=bits, step=step, lossless=lossless, **kw)


def from_options(bits=None, step=None, lossless=False, config: EncodeConfig | None = None, effort: str | None = None) -> EncodeConfig:
    """The config of the API's encoding functions: ``config`` as it is, or one built from the other options.

    Raises:
        InvalidOption: ``config`` together with any other option, or an invalid option.
    """
    if config is not None:
        if bits is not None or step is not None or lossless or effort is not None:
            raise InvalidOption("pass either config or bits/step/lossless/effort, not both")
        return config
    return make_config(bits=bits, step=step, lossless=lossless, effort="best" if effort is None else effort)

