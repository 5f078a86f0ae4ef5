"""Per-method specs: each method's config, network builder, file names and the preprocessing
its pipeline and its trainer must share. ``pipelines/`` and ``training/`` both import from
here; nothing here imports from either (issue 23)."""
