"""Domain-gap diagnostics (proxy A-distance, MK-MMD^2) and a strategy recommendation."""
from .adistance import a_distance_from_error, domain_classifier_error, domain_gap, mmd2, proxy_a_distance
from .recommend import THRESHOLDS, Recommendation, recommend

__all__ = ["a_distance_from_error", "domain_classifier_error", "domain_gap", "mmd2", "proxy_a_distance",
           "THRESHOLDS", "Recommendation", "recommend"]
