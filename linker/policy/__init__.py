"""Client policy as pure state machines: load balancers, failure accrual, retries, classifiers."""
