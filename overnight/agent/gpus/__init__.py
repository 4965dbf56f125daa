"""An agent's GPUs: the inventory (NVML, or a fake), which task holds which GPU, and the hardware
facts a task's record keeps."""
