"""The synthetic image environment: a procedural scene renderer with ground truth and faults."""
