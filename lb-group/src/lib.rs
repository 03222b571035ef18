//! The balancer group: many child policies as one, with a timed close cache.
