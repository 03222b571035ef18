//! The Route Lookup Service (`rls_experimental`) load-balancing policy. Not built yet: see the project issues.
