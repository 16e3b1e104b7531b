"""Face detection, landmarks and alignment for the crop stage."""
