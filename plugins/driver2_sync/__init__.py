"""Bridge from Driver2 (dealer management) invoices to PlanManager (body-shop workshop) dossiers."""
