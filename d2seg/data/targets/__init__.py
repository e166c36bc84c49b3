"""Target generators: pure functions from ground truth to what a head regresses."""
