"""posteriordb posteriors written as Pyro programs, checked against their reference draws."""
