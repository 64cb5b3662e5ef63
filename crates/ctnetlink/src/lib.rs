//! ctnetlink
