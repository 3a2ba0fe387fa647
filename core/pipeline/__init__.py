"""The audio stages and the configuration they read."""

# What every worker process imports as it starts (in parallel, outside any stage's timeout): the stages and what
# they import lazily on their first call (librosa loads its submodules on first use; numba and pyloudnorm come with
# them). Here, in the package's light __init__, so a command can start its workers before importing the engine.
WORKER_PRELOAD = ("core.pipeline.stage_fns", "core.pipeline.ingest", "core.pipeline.preprocess",
                  "core.pipeline.analyze", "core.pipeline.export", "pyarrow.parquet", "librosa.core.convert",
                  "librosa.filters", "librosa.util", "pyloudnorm", "numba")

# What every worker calls as it starts, after those imports: the stages' first calls, for the parts numba's cache
# already holds compiled (it never compiles or waits for the compile lock; the engine's warm-up task does that).
WORKER_WARM_START = "core.pipeline.warmup:warm_cached"
