"""Past one machine: train the M layer sets, run sweeps and draw samples on a Dask cluster.

Optional extra ``optdiff[dask]`` (dask, distributed). The pieces:

* :mod:`.set_trainer`: one set trained alone to the serial trainer's numbers, with its own
  atomic checkpoint part (resumable);
* :mod:`.assemble`: the model, logs and summary from the M parts;
* :mod:`.train`: the M sets as Dask tasks, then the assembly (``optdiff train --workers K``);
* :mod:`.sampling`: large sample sets in chunks across workers, identical for any worker count;
* :mod:`.sweep`: a TOML grid of runs, one task per point, one results table (``optdiff sweep``);
* :mod:`.cluster`: LocalCluster or an existing scheduler, progress bars, the shared-folder check.

Only :mod:`.cluster` and the ``*_on_cluster`` functions need ``distributed``; the task functions
run without it too. See docs/distributed.md.
"""
