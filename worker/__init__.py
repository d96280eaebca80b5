"""The zone agent: consumes `rotate.<zone>`, changes secrets over SSH, reports sealed results."""
