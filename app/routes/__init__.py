"""HTTP routes: each handler chains the stages and does nothing else."""
