r"""What is edited and what is protected: edit records and their loaders, capability text, batching.

* :mod:`~crispedit_lite.data.edits`: :class:`EditRequest` and the loaders of the paper's edit sets
  (ZsRE, CounterFact, WikiBigEdit) and of the shipped counterfactual set;
* :mod:`~crispedit_lite.data.capability`: the capability corpus :math:`\mathcal D_{\rm cap}`;
* :mod:`~crispedit_lite.data.batches`: FT-M edit batches and K-FAC batches.
"""

from crispedit_lite.data.edits import (
    BUILTIN_EDIT_SETS,
    FORMATS,
    EditRequest,
    load_edits,
    parse_records,
    read_records,
)

__all__ = ["BUILTIN_EDIT_SETS", "FORMATS", "EditRequest", "load_edits", "parse_records", "read_records"]
