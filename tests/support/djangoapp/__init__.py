"""A Django app as Django users write one: models for the migration's Django round trip."""
