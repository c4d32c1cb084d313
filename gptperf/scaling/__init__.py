"""Data-parallel scaling through torch.distributed: torchrun launches (`launch`), DDP applied from
outside the model (`ddp`), the per-rank program (`worker`) and the strong/weak study (`study`).
Importing this package imports no torch."""
