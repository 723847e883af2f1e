"""Benchmarks of the platform's hot paths: ``python -m adasparse_lab.bench`` prints one table.

Sections (each a module; every number printed is also a ratio against a baseline measured in
the same run, on the same machine, so that absolute speeds can be compared across machines):
1. ``throughput``: training samples/s of ``trainer.fit`` against a bare PyTorch loop on the same
   tensors (target: fit >= 0.8 x bare) and against a per-item Dataset + DataLoader.
2. ``serving``: forward latency of the masked domain-form model against its physically
   compacted per-domain network, for several batch sizes, with the analytic FLOPs ratio.
3. ``preparation``: wall time and peak RSS (measured in a fresh subprocess) of ``prepare``.
The machine (CPU model, platform, torch version and threads) heads the table.
"""
