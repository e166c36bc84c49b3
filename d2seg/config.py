"""d2seg's config keys: each component declares its own, beside its code; this module collects them.

A component owns one or more config paths (a node such as ``MODEL.ROI_PARSING_HEAD`` or a single
key such as ``MODEL.PARSING_ON``) and registers the function that adds their keys, each with its
default and a one-line comment, with :func:`register_config`. Semantic decode heads do the same
for their sub-node of ``MODEL.SEM_SEG_HEAD`` with
:func:`d2seg.modeling.sem_seg.decode_head.sem_seg_head_config`. :func:`add_d2seg_config` runs
every registered function and refuses one that writes outside the paths it owns, so no
component writes into another's namespace.

:func:`load_config` then checks the merged config: a key of a node that the chosen model does
not read (e.g. ``MODEL.SEM_SEG_HEAD.PSP.POOL_SCALES`` while ``NAME`` is ``"FCNHead"``) fails
naming the key and the file, and so does a key renamed since (:data:`RENAMED_KEYS`), naming its
new name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from detectron2.config import CfgNode, get_cfg

ConfigFunction = Callable[[CfgNode], None]
"""Adds the keys of the paths its component owns to a (root) config."""
UnreadReason = Callable[[CfgNode], "str | None"]
"""None when the component reads its keys under this config, else why it does not."""


@dataclasses.dataclass(frozen=True)
class ConfigComponent:
    """One registered component: the paths it owns and the function that adds their keys."""

    paths: tuple[str, ...]
    add_keys: ConfigFunction
    unread_reason: UnreadReason | None = None
    check: ConfigFunction | None = None


_COMPONENTS: list[ConfigComponent] = []

# Keys of earlier d2seg versions and where they live now; a config that still sets one fails
# naming the new place (yacs' renamed-key error).
_SEM = "MODEL.SEM_SEG_HEAD."
_AUX_LIST = (
    _SEM + "AUX",
    "auxiliary heads are now a list: AUX: [{IN_FEATURE: res4, CHANNELS: 256, NUM_CONVS: 1, "
    "KERNEL_SIZE: 3, LOSS_WEIGHT: 0.4}]",
)
RENAMED_KEYS: dict[str, str | tuple[str, str]] = {
    _SEM + "FCN_NUM_CONVS": _SEM + "FCN.NUM_CONVS",
    _SEM + "FCN_CONCAT_INPUT": _SEM + "FCN.CONCAT_INPUT",
    _SEM + "PSP_POOL_SCALES": _SEM + "PSP.POOL_SCALES",
    _SEM + "DANET_PAM_CHANNELS": _SEM + "DANET.PAM_CHANNELS",
    _SEM + "CCNET_RECURRENCE": _SEM + "CCNET.RECURRENCE",
    _SEM + "ASPP_DILATIONS": _SEM + "ASPP.DILATIONS",
    _SEM + "ASPP_V2_DILATIONS": _SEM + "ASPP_V2.DILATIONS",
    _SEM + "ANN_PROJECT_CHANNELS": _SEM + "ANN.PROJECT_CHANNELS",
    _SEM + "ANN_KEY_POOL_SCALES": _SEM + "ANN.KEY_POOL_SCALES",
    _SEM + "DENSE_ASPP_DILATIONS": _SEM + "DENSE_ASPP.DILATIONS",
    _SEM + "DENSE_ASPP_GROWTH": _SEM + "DENSE_ASPP.GROWTH",
    _SEM + "PSA_MASK_SIZE": _SEM + "PSA.MASK_SIZE",
    _SEM + "PSA_SHRINK_FACTOR": _SEM + "PSA.SHRINK_FACTOR",
    _SEM + "ISA_CHANNELS": _SEM + "ISA.CHANNELS",
    _SEM + "ISA_DOWN_FACTOR": _SEM + "ISA.DOWN_FACTOR",
    _SEM + "OCR_CHANNELS": _SEM + "OCR.CHANNELS",
    _SEM + "C1_IN_FEATURE": _SEM + "DEEPLABV3PLUS.C1_IN_FEATURE",
    _SEM + "C1_CHANNELS": _SEM + "DEEPLABV3PLUS.C1_CHANNELS",
    _SEM + "LRASPP_BRANCH_CHANNELS": _SEM + "LRASPP.BRANCH_CHANNELS",
    _SEM + "LRASPP_POOL_KERNEL": _SEM + "LRASPP.POOL_KERNEL",
    _SEM + "LRASPP_POOL_STRIDE": _SEM + "LRASPP.POOL_STRIDE",
    _SEM + "AUX_IN_FEATURE": _AUX_LIST,
    _SEM + "AUX_CHANNELS": _AUX_LIST,
    _SEM + "AUX_KERNEL_SIZE": _AUX_LIST,
    _SEM + "AUX_LOSS_WEIGHT": _AUX_LIST,
    _SEM + "PROJECT_FEATURES": (
        _SEM + "PANOPTIC_DEEPLAB.PROJECT_CHANNELS",
        "the projected features are IN_FEATURES but the last",
    ),
    _SEM + "PROJECT_CHANNELS": _SEM + "PANOPTIC_DEEPLAB.PROJECT_CHANNELS",
    _SEM + "ASPP_CHANNELS": _SEM + "PANOPTIC_DEEPLAB.ASPP_CHANNELS",
    _SEM + "ASPP_DROPOUT": _SEM + "PANOPTIC_DEEPLAB.ASPP_DROPOUT",
    _SEM + "HEAD_CHANNELS": _SEM + "PANOPTIC_DEEPLAB.HEAD_CHANNELS",
    _SEM + "LOSS_TYPE": _SEM + "PANOPTIC_DEEPLAB.LOSS_TYPE",
    _SEM + "LOSS_TOP_K": _SEM + "PANOPTIC_DEEPLAB.LOSS_TOP_K",
    "MODEL.INS_EMBED_HEAD.PROJECT_FEATURES": (
        "MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS",
        "the projected features are IN_FEATURES but the last",
    ),
}


def register_config(
    *paths: str,
    unread_reason: UnreadReason | None = None,
    check: ConfigFunction | None = None,
) -> Callable[[ConfigFunction], ConfigFunction]:
    """Decorator: the function adds the keys of `paths` (dotted, from the config root) with
    their defaults; it may write nothing else.

    Args:
        paths: the nodes or keys the component owns; each has one owner.
        unread_reason: for a component that not every model reads (a head's own node): None
            when `cfg` reads it, else the reason, for the error on a config that sets its keys.
        check: validates the merged config (raise ValueError naming the key).
    """

    def register(add_keys: ConfigFunction) -> ConfigFunction:
        for path in paths:
            owner = next((c for c in _COMPONENTS if path in c.paths), None)
            if owner is not None:
                raise ValueError(
                    f"config path {path} is owned by {_qualname(owner.add_keys)} already; "
                    f"{_qualname(add_keys)} cannot own it too"
                )
        _COMPONENTS.append(ConfigComponent(tuple(paths), add_keys, unread_reason, check))
        return add_keys

    return register


def config_components() -> list[ConfigComponent]:
    """Every registered component, in registration order (all of d2seg imported)."""
    import d2seg  # noqa: F401  (components register when their modules are imported)

    return list(_COMPONENTS)


def flatten(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every leaf of `node`."""
    for key, value in node.items():
        if isinstance(value, CfgNode):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _owns(paths: Sequence[str], key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in paths)


def _qualname(function: Callable) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def add_d2seg_config(cfg: CfgNode) -> CfgNode:
    """Add every d2seg key to a Detectron2 config (call before `merge_from_file`): each
    registered component's function, checked to write only the paths it owns."""
    for component in config_components():
        before = dict(flatten(cfg))
        component.add_keys(cfg)
        written = [k for k, v in flatten(cfg) if k not in before or before[k] != v]
        foreign = [k for k in written if not _owns(component.paths, k)]
        if foreign:
            raise RuntimeError(
                f"{_qualname(component.add_keys)} owns {list(component.paths)} but wrote {foreign}"
            )
    for old, new in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, *(new if isinstance(new, tuple) else (new,)))
    return cfg


def check_config(cfg: CfgNode, source: str) -> None:
    """Raise ValueError, naming `source` (a file or the command line), where `cfg` sets a key
    that the model it describes does not read, or where a component's own check fails."""
    defaults = dict(flatten(add_d2seg_config(get_cfg())))
    values = dict(flatten(cfg))
    for component in config_components():
        if component.check is not None:
            try:
                component.check(cfg)
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from error
        reason = component.unread_reason(cfg) if component.unread_reason else None
        if reason is None:
            continue
        changed = [k for k in values if _owns(component.paths, k) and values[k] != defaults.get(k)]
        if changed:
            raise ValueError(
                f"{source}: {', '.join(changed)} is set, but this model does not read it "
                f"({reason}); remove it or choose the model that reads it"
            )


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Detectron2 defaults + d2seg keys, then `config_file`, then `KEY VALUE` overrides; frozen.

    An unknown or renamed key raises a KeyError, and a key the chosen model does not read a
    ValueError, each naming the key and where it came from.
    """
    cfg = add_d2seg_config(get_cfg())
    try:
        cfg.merge_from_file(config_file)
    except KeyError as error:
        raise KeyError(f"{config_file}: {error.args[0]}") from error
    except ValueError as error:  # yacs: a value of the wrong type (names key and value)
        raise ValueError(f"{config_file}: {error}") from error
    except FileNotFoundError as error:  # fvcore checks the file itself, not its _BASE_
        raise FileNotFoundError(f"{config_file}: _BASE_ {error.filename!r} not found") from error
    check_config(cfg, config_file)
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as error:  # yacs asserts on unknown override keys
        raise KeyError(f"command-line overrides: {error.args[0]}") from error
    if opts:
        check_config(cfg, "command-line overrides")
    cfg.TEST.REPORT.CONFIG_FILE = cfg.TEST.REPORT.CONFIG_FILE or str(config_file)
    cfg.freeze()
    return cfg
