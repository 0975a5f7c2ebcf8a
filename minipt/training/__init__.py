"""The one training loop (loop.py) and what it works with: checkpoints, state, records, progress, interrupts,
distributed, the device, the strategies and the frozen cache."""
