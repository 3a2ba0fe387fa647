"""The audio stages and the configuration they read."""

# What every worker process imports as it starts (in parallel, outside any stage's timeout): the stages and what
# they import lazily on their first call (librosa loads its submodules on first use; numba and pyloudnorm come with
# them). Here, in the package's light __init__, so a command can start its workers before importing the engine.
WORKER_PRELOAD = ("core.pipeline.stage_fns", "core.pipeline.ingest", "core.pipeline.preprocess",
                  "core.pipeline.analyze", "core.pipeline.export", "pyarrow.parquet", "librosa.core.convert",
                  "librosa.filters", "librosa.util", "pyloudnorm", "numba")
