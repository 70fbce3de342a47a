"""The search: space files, samplers, MO-ASHA, Pareto fronts, hypervolume, what may stop a trial."""
