"""Typed errors raised by ecnn.

Every failed check has a class of its own so that callers (and the conformance
fixtures in ``fixtures/v1/invalid``) can tell exactly which check failed. All of
them derive from :class:`EcnnError`.

Two families:

* :class:`FormatError` -- the bytes of a ``.ecnn`` file break the format
  (``spec/FORMAT.md``, ``spec/CODING.md``). Raised while reading, always before
  any allocation whose size comes from the file.
* :class:`InputError` -- the caller asked for something ecnn cannot do
  (bad options, unsupported dtype, unsafe input file, refusing to overwrite).
"""

from __future__ import annotations


class EcnnError(Exception):
    """Base class of every error raised by ecnn."""


# --- reading a .ecnn file -------------------------------------------------


class FormatError(EcnnError):
    """The file is not a valid ``.ecnn`` file."""


class BadSignature(FormatError):
    """The first 8 bytes are not the ``.ecnn`` signature."""


class UnsupportedVersion(FormatError):
    """Format_Major is not one this decoder implements."""


class TruncatedFile(FormatError):
    """The file ends before a structure it declares."""


class HeaderTooLarge(FormatError):
    """Header_Length exceeds the documented cap."""


class HeaderChecksumMismatch(FormatError):
    """Header_CRC32 does not match the header bytes."""


class MalformedHeader(FormatError):
    """The header is not one well-formed MessagePack map."""


class DuplicateKey(FormatError):
    """A MessagePack map in the header repeats a key."""


class UnknownField(FormatError):
    """The header has a field this decoder must understand but does not know."""


class InvalidField(FormatError):
    """A header field has the wrong type or a value out of its range."""


class DuplicateTensorName(FormatError):
    """Two tensor records share a name."""


class BadFileName(FormatError):
    """A stored file's name is not a safe relative path (spec/FORMAT.md 6.6)."""


class DuplicateFileName(FormatError):
    """Two stored files have the same name (ignoring case), or one's name is a folder of the other's."""


class LimitExceeded(FormatError):
    """A declared count or size exceeds a documented cap."""


class BadLayout(FormatError):
    """Payload offsets or lengths overlap, leave holes, are misaligned or out of range."""


class NonZeroPadding(FormatError):
    """A padding byte between structures is not zero."""


class TrailingData(FormatError):
    """Bytes follow the last payload."""


class PayloadChecksumMismatch(FormatError):
    """A tensor payload does not match its CRC-32."""


class UnsupportedCoding(FormatError):
    """A representation, coder kind or coder parameter this decoder does not implement."""


class CorruptPayload(FormatError):
    """A payload's contents contradict its record (bad table, wrong length, bad symbols)."""


# --- caller input ----------------------------------------------------------


class InputError(EcnnError):
    """The caller's input or options cannot be used."""


class InvalidOption(InputError, ValueError):
    """An option is out of range, or two options conflict."""


class UnsupportedDtype(InputError, TypeError):
    """A tensor has a dtype the format cannot store."""


class InvalidTensorName(InputError, ValueError):
    """A tensor name is empty, too long, or repeated."""


class InvalidFileName(InputError, ValueError):
    """A file to store has a name the format does not allow, or one repeated (spec/FORMAT.md 6.6)."""


class FileNotStored(InputError, KeyError):
    """No stored file of that name is in the ``.ecnn`` file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain.
        return str(self.args[0]) if self.args else ""


class NoStoredConfig(FileNotStored):
    """The ``.ecnn`` file stores no ``config.json``: it was packed from weights, not from a model folder."""


class MissingDependency(InputError, ImportError):
    """An optional package that this function needs is not installed (e.g. ``transformers``)."""


class UnsafeInput(InputError):
    """An input file would need code execution (pickle) or escapes its folder."""


class UnreadableInput(InputError):
    """An input weights file cannot be read or has an unknown kind."""


class OutputExists(InputError, FileExistsError):
    """The output file exists and overwriting it was not allowed."""


class ForeignOutput(OutputExists):
    """The output path holds something ecnn did not write (another kind of file, a foreign folder); it is never replaced."""


class SameFile(InputError):
    """The output path is the input file itself."""


class TensorNotFound(InputError, KeyError):
    """No tensor of that name is in the file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain.
        return str(self.args[0]) if self.args else ""


class BudgetError(InputError):
    """A budget given to ``ecnn.compress`` cannot be met."""


class BudgetTooSmall(BudgetError):
    """``target_bytes`` is below the smallest file the allocation can make."""


class MetricNotReached(BudgetError):
    """No allocation within the budget keeps the metric within ``max_metric_drop``."""
