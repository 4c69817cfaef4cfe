"""GPU counts of the cloud instance types the guides use, to catch impossible layouts early."""
from __future__ import annotations

# Alibaba Cloud ecs.gn7i family (NVIDIA A10, 24 GB): instance type -> GPUs per node.
ACK_INSTANCE_GPUS: dict[str, int] = {
    "ecs.gn7i-c8g1.2xlarge": 1,
    "ecs.gn7i-c16g1.4xlarge": 1,
    "ecs.gn7i-c32g1.8xlarge": 1,
    "ecs.gn7i-c48g1.12xlarge": 1,
    "ecs.gn7i-c56g1.14xlarge": 1,
    "ecs.gn7i-c32g1.16xlarge": 2,
    "ecs.gn7i-c32g1.32xlarge": 4,
    "ecs.gn7i-2x.8xlarge": 2,
    "ecs.gn7i-4x.8xlarge": 4,
    "ecs.gn7i-4x.16xlarge": 4,
    "ecs.gn7i-8x.32xlarge": 8,
    "ecs.gn7i-8x.16xlarge": 8,
}

# GKE accelerator machine types with a fixed GPU count (A3/A2/G2 families).
GKE_MACHINE_GPUS: dict[str, int] = {
    "g2-standard-4": 1,
    "g2-standard-8": 1,
    "g2-standard-12": 1,
    "g2-standard-16": 1,
    "g2-standard-24": 2,
    "g2-standard-32": 1,
    "g2-standard-48": 4,
    "g2-standard-96": 8,
    "a2-highgpu-1g": 1,
    "a2-highgpu-2g": 2,
    "a2-highgpu-4g": 4,
    "a2-highgpu-8g": 8,
    "a3-highgpu-1g": 1,
    "a3-highgpu-2g": 2,
    "a3-highgpu-4g": 4,
    "a3-highgpu-8g": 8,
}
