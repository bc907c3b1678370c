"""Where and how the work runs: the CPU and its threads, the precision probe and choice (machine.py), the
thread governor that yields cores to other processes (governor.py), the device and autocast (runtime.py),
processes under torchrun (distributed.py)."""
