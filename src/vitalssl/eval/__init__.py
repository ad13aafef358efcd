"""What a pretrained encoder is worth: reconstruction against non-learned baselines, and linear probes."""
