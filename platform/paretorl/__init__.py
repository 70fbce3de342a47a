"""ParetoRL: hyperparameter sweeps for RL post-training of reasoning LMs.

Sweeps the length-penalty coefficient alpha, the learning rate, the KL coefficient and
the objective (GRPO, MaxRL, RLOO, Dr.GRPO) with Ray Tune + Optuna, and shows the Pareto
front of tokens spent against pass@k in MLflow.
"""

__version__ = "0.1.0"
