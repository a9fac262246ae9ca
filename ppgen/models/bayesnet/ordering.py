"""The graph side of variable elimination: which variables matter, and in what order.

* :func:`ancestral_closure`: the query and evidence variables and their ancestors; the
  others are *barren* (summing a CPT over its child gives 1) and are pruned.
* :func:`min_fill_order`: a greedy elimination order that eliminates next the variable
  whose bucket adds the fewest new edges between its neighbours (ties: the smaller
  bucket); the largest bucket it creates bounds the cost of the elimination.
"""

from __future__ import annotations

import heapq
import math


def ancestral_closure(parents, nodes):
    """``nodes`` and all their ancestors (a set of variable ids)."""
    seen = set()
    stack = list(nodes)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        stack.extend(parents[v])
    return seen


def min_fill_order(scopes, groups, cards):
    """Greedy min-fill elimination order.

    Parameters
    ----------
    scopes : iterable of sets of variable ids
        The factors' variables; the interaction graph joins every two
        variables that share a factor.
    groups : list of sets
        Variables to eliminate, group by group (all of the first group before
        any of the second: sum-out before max-out for marginal MAP).
    cards : sequence of int
        The cardinality of each variable.

    Returns
    -------
    list of int
        The order; ties go to the smaller bucket (min-weight), then the lower id.
    """
    adj = {}
    for scope in scopes:
        for a in scope:
            adj.setdefault(a, set()).update(b for b in scope if b != a)

    def score(v):
        nb = list(adj[v])
        fill = 0
        for i, a in enumerate(nb):
            na = adj[a]
            for b in nb[i + 1:]:
                if b not in na:
                    fill += 1
        weight = math.fsum(math.log(cards[b]) for b in nb) + math.log(cards[v])
        return (fill, weight)

    order = []
    for group in groups:
        group = set(group)
        for v in group:
            adj.setdefault(v, set())
        current = {v: score(v) for v in group}
        heap = [(s, v) for v, s in current.items()]
        heapq.heapify(heap)
        while heap:
            s, v = heapq.heappop(heap)
            if v not in group or current[v] != s:
                continue
            group.discard(v)
            order.append(v)
            nb = adj.pop(v)
            affected = set(nb)
            for a in nb:
                adj[a].discard(v)
            for a in nb:
                new = nb - adj[a]
                new.discard(a)
                if new:
                    adj[a] |= new
                    affected |= adj[a]
            for a in affected:
                if a in group:
                    s_new = score(a)
                    if s_new != current[a]:
                        current[a] = s_new
                        heapq.heappush(heap, (s_new, a))
    return order
