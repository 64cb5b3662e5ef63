//! Pure decisions: (ServiceMap, flows) -> verdicts and delete plans.
