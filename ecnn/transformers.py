"""Hugging Face ``transformers`` models from one ``.ecnn`` file.

``ecnn pack model_folder/`` stores the folder's configuration and tokenizer
files in the ``.ecnn`` beside its weights (spec/FORMAT.md, "Stored files").
This adapter builds the model and its tokenizer from that one file:

* :func:`from_pretrained` builds the model named in the stored ``config.json``
  with its parameters on the meta device (no memory), then decodes the
  weights one at a time straight into place (:func:`ecnn.torch.load_into`):
  the host holds about one copy of the model, never two;
* :func:`tokenizer` builds ``AutoTokenizer`` from the stored tokenizer files;
* :func:`config` builds ``AutoConfig`` from the stored ``config.json``.

``transformers`` is an optional dependency (``pip install 'ecnn[hf]'``);
importing ecnn never imports it. Stored files are only ever parsed as
configuration or tokenizer data: remote code (``trust_remote_code``) is
never enabled, and code files are never stored by ``ecnn pack``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from typing import Iterator

from ecnn import file as _file
from ecnn.container.format import Limits
from ecnn.errors import InvalidOption, MissingDependency, NoStoredConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingDependency("ecnn.transformers needs transformers: pip install 'ecnn[hf]'") from None
    return transformers


def stored_files(path, limits: Limits = Limits()) -> dict[str, bytes]:
    """The files stored in a ``.ecnn`` (``{name: bytes}``), each checked against its CRC-32."""
    with _file.EcnnFile(path, limits) as f:
        return f.files()


@contextlib.contextmanager
def _folder(files: dict[str, bytes]) -> Iterator[str]:
    """The stored files written to a temporary folder, removed on exit (transformers reads folders)."""
    with tempfile.TemporaryDirectory(prefix="ecnn-hf-") as tmp:
        for name, data in _file.check_files(files):
            _file.write_file_into(tmp, name, data)
        yield tmp


def _config_files(path, limits: Limits) -> dict[str, bytes]:
    files = stored_files(path, limits)
    if CONFIG_FILE not in files:
        where = path if isinstance(path, (str, os.PathLike)) else "the file"
        raise NoStoredConfig(
            f"{where} stores no {CONFIG_FILE}: pack the model's folder (ecnn pack FOLDER/) "
            "rather than its weights file, or build the model yourself and use ecnn.torch.load_into"
        )
    return files


def config(path, *, limits: Limits = Limits()):
    """The model's configuration, ``AutoConfig`` built from the stored ``config.json``.

    Raises:
        NoStoredConfig: the file stores no ``config.json``.
        MissingDependency: transformers is not installed.
    """
    tf = _transformers()
    files = _config_files(path, limits)
    with _folder({CONFIG_FILE: files[CONFIG_FILE]}) as tmp:
        return tf.AutoConfig.from_pretrained(tmp, trust_remote_code=False, local_files_only=True)


def tokenizer(path, *, limits: Limits = Limits(), **kwargs):
    """``AutoTokenizer`` built from the stored tokenizer files.

    The stored files are written to a temporary folder that is removed before
    this returns (tokenizers read their files when built). Extra keyword
    arguments go to ``AutoTokenizer.from_pretrained`` (``trust_remote_code``
    is refused).

    Raises:
        NoStoredConfig: the file stores no ``config.json``.
        MissingDependency: transformers is not installed.
        InvalidOption: ``trust_remote_code`` was passed.
    """
    tf = _transformers()
    if kwargs.pop("trust_remote_code", False):
        raise InvalidOption("ecnn.transformers never runs code from a file: trust_remote_code is refused")
    files = _config_files(path, limits)
    with _folder(files) as tmp:
        return tf.AutoTokenizer.from_pretrained(tmp, trust_remote_code=False, local_files_only=True, **kwargs)


@contextlib.contextmanager
def _parameters_on_meta():
    """Build modules with their parameters on the meta device and their buffers real.

    ``torch.nn.Module.register_parameter`` is patched while the block runs (as
    accelerate's ``init_empty_weights`` does), so modules built on other
    threads meanwhile get meta parameters too.

    Unlike ``with torch.device("meta")``, buffers computed at construction
    (``position_ids``, rotary ``inv_freq``, which are not persistent and so
    never in a checkpoint) keep their values; parameters take no memory
    until :func:`ecnn.torch.load_into` replaces them with decoded tensors.
    """
    import torch

    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        p = module._parameters.get(name)
        if p is not None and p.device.type != "meta":
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def _model_class(tf, cfg, model_class):
    if model_class is None:
        names = getattr(cfg, "architectures", None) or []
        model_class = names[0] if names else "AutoModel"
    if isinstance(model_class, str):
        cls = getattr(tf, model_class, None)
        if cls is None:
            log.warning("transformers has no class %s (remote code is never run): using AutoModel", model_class)
            cls = tf.AutoModel
        model_class = cls
    if not isinstance(model_class, type):
        raise InvalidOption(f"model_class must be a transformers model class or its name, got {model_class!r}")
    return model_class


def _stored_float_dtype(path, limits: Limits):
    from ecnn import torch as et
    from ecnn import dtypes

    with _file.EcnnFile(path, limits) as f:
        for info in f.infos():
            dt = dtypes.get(info.dtype)
            if dt.kind == "f":
                return et.torch_dtype(dt)
    return None


def _build(tf, cls, cfg, dtype):
    major = int(tf.__version__.split(".")[0])
    kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    if hasattr(cls, "from_config") and cls.__module__.startswith("transformers.models.auto"):
        return cls.from_config(cfg, **kw)
    return cls._from_config(cfg, **kw)


def _target(model, file_names: set[str]):
    """The module whose state-dict names the file's match best: the model itself, the model inside a
    holder under its ``base_model_prefix`` (file from a model with a head, loaded as the base model),
    or its base model (file from the base model, loaded as a model with a head)."""
    import torch

    own = set(model.state_dict().keys())
    prefix = getattr(model, "base_model_prefix", "") or ""
    candidates = [(len(own & file_names), model)]
    if prefix:
        holder = torch.nn.Module()
        holder.add_module(prefix, model)
        candidates.append((len({f"{prefix}.{k}" for k in own} & file_names), holder))
        base = getattr(model, prefix, None)
        if isinstance(base, torch.nn.Module) and base is not model:
            candidates.append((len(set(base.state_dict().keys()) & file_names), base))
    best = max(candidates, key=lambda c: c[0])  # the first wins a tie: the model itself
    return best[1]


def _materialize_leftovers(model, device) -> list[str]:
    """Parameters and buffers still on the meta device (not in the file, not tied): initialized as
    transformers initializes missing weights, and listed."""
    import torch

    left = []
    for mod_name, mod in model.named_modules():
        fixed = False
        for kind in ("_parameters", "_buffers"):
            table = getattr(mod, kind)
            for name, t in list(table.items()):
                if t is not None and t.device.type == "meta":
                    new = torch.zeros(t.shape, dtype=t.dtype, device=device)
                    table[name] = type(t)(new, requires_grad=t.requires_grad) if kind == "_parameters" else new
                    left.append(f"{mod_name}.{name}" if mod_name else name)
                    fixed = True
        if fixed and hasattr(model, "_init_weights"):
            try:
                with torch.no_grad():
                    model._init_weights(mod)
            except Exception as e:  # noqa: BLE001 - the zeros stay; say so
                log.warning("could not initialize %s (%s); it stays zero", mod_name or "the model", e)
    return left


def from_pretrained(
    path,
    *,
    model_class=None,
    torch_dtype=None,
    device="cpu",
    limits: Limits = Limits(),
    workers: int | None = None,
):
    """The ``transformers`` model a ``.ecnn`` file was packed from, ready for inference.

    The model is built from the stored ``config.json`` with its parameters on
    the meta device; each weight is then decoded and put in place on
    ``device`` (:func:`ecnn.torch.load_into`), so the host holds about one
    copy of the model. Buffers the model computes at construction
    (non-persistent ones such as ``position_ids``) keep their computed values;
    tied weights (an output layer sharing the input embeddings) stay tied.
    Weights the file lacks are initialized as transformers does and logged.

    Args:
        path: the ``.ecnn`` file (or its bytes), packed from a model folder
            (``ecnn pack FOLDER/``).
        model_class: a transformers model class or its name
            (``"BertForMaskedLM"``, ``"AutoModel"``); default: the config's
            ``architectures[0]``, else ``AutoModel``. Weights saved with a
            head load into the base model and the other way round, as
            ``transformers`` does.
        torch_dtype: the dtype of the model's floating-point weights (a
            ``torch.dtype``, its name, or ``"auto"``); default (None or
            ``"auto"``): the dtype the file stores them in.
        device: where the weights go (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        limits: caps on what the file may make the reader allocate.
        workers: decoding threads (None: ``ECNN_WORKERS`` or the CPU count, at most 8).

    Returns:
        The model, in ``eval()`` mode.

    Raises:
        NoStoredConfig: the file stores no ``config.json``.
        MissingDependency: transformers (or torch) is not installed.
        InvalidOption: a bad ``model_class`` or ``torch_dtype``.
        FormatError: the file is damaged (a subclass naming the check).

    Example:
        >>> model = ecnn.transformers.from_pretrained("bert.ecnn")   # doctest: +SKIP
        >>> tok = ecnn.transformers.tokenizer("bert.ecnn")           # doctest: +SKIP
        >>> out = model(**tok(["hello world"], return_tensors="pt"))  # doctest: +SKIP
    """
    tf = _transformers()
    import torch

    from ecnn import torch as et

    cfg = config(path, limits=limits)
    cls = _model_class(tf, cfg, model_class)
    if torch_dtype is None or torch_dtype == "auto":
        dtype = _stored_float_dtype(path, limits) or torch.float32
    elif isinstance(torch_dtype, str) and isinstance(getattr(torch, torch_dtype, None), torch.dtype):
        dtype = getattr(torch, torch_dtype)
    elif isinstance(torch_dtype, torch.dtype):
        dtype = torch_dtype
    else:
        raise InvalidOption(f"torch_dtype must be a torch dtype, its name or 'auto', got {torch_dtype!r}")
    device = torch.device(device)
    with _parameters_on_meta():
        model = _build(tf, cls, cfg, dtype)
    with _file.EcnnFile(path, limits) as f:
        names = set(f.weight_names())
    target = _target(model, names)
    missing, unexpected = et.load_into(target, path, strict=False, device=device, workers=workers, limits=limits)
    if unexpected:
        log.info("%d tensors of the file are not used by %s: %s", len(unexpected), cls.__name__, ", ".join(unexpected[:8]))
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # an output layer that shares the input embeddings shares the loaded tensor
    left = _materialize_leftovers(model, device)
    if left:
        log.warning("%d weights are not in the file and were newly initialized: %s", len(left), ", ".join(left[:8]))
    model.to(device)  # the buffers computed at construction (on the CPU) join the weights
    return model.eval()


def config_json(path, *, limits: Limits = Limits()) -> dict:
    """The stored ``config.json`` as a dict, without transformers (NoStoredConfig if there is none)."""
    files = _config_files(path, limits)
    try:
        return json.loads(files[CONFIG_FILE])
    except ValueError as e:
        raise InvalidOption(f"the stored {CONFIG_FILE} is not JSON: {e}") from None
