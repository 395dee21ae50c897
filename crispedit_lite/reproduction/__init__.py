"""From a run to the paper's tables: one experiment end to end, results JSON, the paper's numbers beside runs.

* :mod:`~crispedit_lite.reproduction.experiment`: load, evaluate, edit, evaluate, write;
* :mod:`~crispedit_lite.reproduction.results`: the results schema and store;
* :mod:`~crispedit_lite.reproduction.paper_tables`: the paper's numbers;
* :mod:`~crispedit_lite.reproduction.cells`: papermill parameters of a paper table cell to a run;
* :mod:`~crispedit_lite.reproduction.comparison`: paper beside run;
* :mod:`~crispedit_lite.reproduction.paths`: paths of a checkout;
* :mod:`~crispedit_lite.reproduction.committed`: the benchmark results shipped with the package.
"""
