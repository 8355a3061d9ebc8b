"""Real-model fixtures for tests, written by hand (never torchvision) and kept small enough
for CPU tests through their width parameters."""
