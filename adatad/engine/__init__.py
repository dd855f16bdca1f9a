"""Training machinery: parameter groups, schedule, EMA, one optimisation step."""
