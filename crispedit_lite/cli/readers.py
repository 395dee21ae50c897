r"""Which shared settings a method reads: a setting given to a method that ignores it is refused.

``edit --method ft --gamma 0.5`` would otherwise run FT, which has no projector, and record
:math:`\gamma = 0.5` in the results as if it had been used. :data:`READ_BY` states, for each shared
:class:`~crispedit_lite.editing.EditConfig` field that has a flag of its own, which editors read it,
in terms of the facts each editor declares in the registry (:mod:`crispedit_lite.editing.registry`:
its ``update``, its ``statistics``, whether it is ``sequential``, its settings):

* :math:`\gamma`, the eigendecomposition dtype and the projection: editors whose statistics are the
  capability K-FAC (CrispEdit, CrispEdit-Seq; and the input covariance's null space for
  ``eigh_dtype`` and ``projection``); AlphaEdit also reads :math:`\gamma` with
  ``cf_nullspace_rule=energy`` and no ``cf_nullspace_gamma`` of its own;
* epochs, batch size, learning rate and optimiser: the gradient editors (``update`` =
  ``"projected_gradient"``), not the closed-form solves and not MEND's learned step (``"learned"``,
  whose step sizes come from its trained network);
* the capability text (``n_capability``, its source, length and K-FAC labels): editors that read
  statistics;
* the chunk size: sequential editors and the closed-form family (UltraEdit batches by it), except
  MEND-Seq, which steps by its own ``mend_edits_per_step``;
* the edited layers: every editor except those whose settings pick their own matrices, UltraEdit
  with ``ultra_modules=preset`` and MEND with ``mend_modules=preset`` (the default of both).

The rule errs on the side of accepting: a setting is refused only where the method provably does not
read it (a test changes every refused setting at once and checks that the edited weights stay the
same bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["READ_BY", "readers", "unread_settings"]

_PROJECTOR_STATS = {"capability_kfac", "input_covariance"}
_CAPABILITY_STATS = {"capability_kfac", "input_covariance", "edit_kfac"}


def _energy_nullspace(config: Any) -> bool:
    settings = getattr(config, "settings", None)
    return (getattr(settings, "cf_nullspace_rule", None) == "energy"
            and getattr(settings, "cf_nullspace_gamma", 0) is None)


def _gradient(editor: Any, config: Any) -> bool:
    return editor.update == "projected_gradient"


def _capability(editor: Any, config: Any) -> bool:
    return bool(_CAPABILITY_STATS & set(editor.statistics))


def _projector(editor: Any, config: Any) -> bool:
    return bool(_PROJECTOR_STATS & set(editor.statistics))


def _chunks(editor: Any, config: Any) -> bool:
    return (editor.sequential and editor.update != "learned") or editor.update == "closed_form"


def _layers(editor: Any, config: Any) -> bool:
    settings = getattr(config, "settings", None)
    return "preset" not in (getattr(settings, "ultra_modules", None), getattr(settings, "mend_modules", None))


#: Shared field -> does ``editor`` (with run settings ``config``) read it?
READ_BY: dict[str, Callable[[Any, Any], bool]] = {
    "gamma": lambda e, c: "capability_kfac" in e.statistics or _energy_nullspace(c),
    "epochs": _gradient, "batch_size": _gradient, "lr": _gradient, "optimizer": _gradient,
    "n_capability": _capability, "capability_source": _capability, "capability_max_length": _capability,
    "kfac_labels": _capability,
    "chunk_size": _chunks, "eigh_dtype": _projector, "projection": _projector, "layers": _layers,
}


def readers(field: str) -> list[str]:
    """The methods that read ``field`` with their default settings.

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing import EditConfig
    from crispedit_lite.editing.registry import registry

    rule = READ_BY[field]
    return [n for n, e in registry().items() if rule(e, EditConfig(n))]


def unread_settings(config: Any, given: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(field, how it was given, who reads it)`` for each given field that ``config.method`` ignores.

    ``given`` maps field names to how the command line gave them (``{"gamma": "--gamma"}``).

    Listed on the book page ``api``.
    """
    from crispedit_lite.editing.registry import get_editor

    editor = get_editor(config.method)
    out = []
    for field, how in given.items():
        rule = READ_BY.get(field)
        if rule is None or rule(editor, config):
            continue
        who = ", ".join(readers(field)) or "no method with its default settings"
        if field == "gamma":
            who += " (and AlphaEdit's null space with --set cf_nullspace_rule=energy)"
        out.append((field, how, who))
    return out
