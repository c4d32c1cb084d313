"""Data-parallel scaling through torch.distributed: torchrun launches (`launch`), DDP applied from
outside the model (`ddp`), the per-rank program (`worker`), the strong/weak study (`study`) and
its typed results (`results`). Importing this package imports no torch."""
