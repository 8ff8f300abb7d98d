"""Congressional Data API: the sample service Shipyard releases."""
