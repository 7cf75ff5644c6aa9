"""Slices on one machine: the inventory (declared or NVML), the allocator, durable reservations,
CPU pinning and memory limits, and LocalSliceSpawner."""
