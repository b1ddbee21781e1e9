"""Multi-path optical networks for several domains: a super-network of candidate phase masks
(and skips) at each position, one REINFORCE path controller per domain, adaptive balanced domain
prioritisation, and the comparison with separate and fully shared models (docs/multidomain.md).
NumPy and the optical core only."""

from .config import DomainSpec, SearchConfig, search_config_from_dict
from .controller import PathController
from .domains import DomainData, domain_from_arrays, domain_index, load_domains
from .prioritise import adaptive_weights, progress_ratio, uniform_weights
from .readouts import ClassifierReadout, DenoiserReadout, detector_layout
from .report import plot_paths, results_table
from .runner import run_variants
from .search import VariantRun, path_costs
from .state import restore_run, save_run
from .supernet import SKIP, SuperNet, distinct_masks, format_path

__all__ = ["SKIP", "SuperNet", "PathController", "VariantRun", "DomainData", "DomainSpec", "SearchConfig",
           "ClassifierReadout", "DenoiserReadout", "detector_layout", "adaptive_weights", "progress_ratio",
           "uniform_weights", "search_config_from_dict", "domain_from_arrays", "domain_index", "load_domains",
           "run_variants", "save_run", "restore_run", "path_costs", "distinct_masks", "format_path",
           "plot_paths", "results_table"]
