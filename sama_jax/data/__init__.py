"""Host-side data: video I/O, pretext corruptions, dataset sources, grain pipelines and
the synthetic world. Nothing here imports `sama_jax.models`."""
