//! Tests of the index: operations against a simple model, and the parts round trip with every
//! invariant `from_parts` must refuse.

use super::*;

fn code(v: u64) -> [u64; 4] {
    [v, !v, v.rotate_left(7), v ^ 0x5555]
}

#[test]
fn insert_search_delete_round_trip() {
    let mut ix = Index::new(4, 10, false).unwrap();
    let (a, _) = ix.insert("ns", &code(1), f64::INFINITY).unwrap();
    let (b, _) = ix.insert("ns", &code(2), f64::INFINITY).unwrap();
    let (found, _) = ix.search("ns", &code(2), 1, 0, 0.0).unwrap();
    assert_eq!(found, vec![Found { id: b, distance: 0 }]);
    assert!(ix.remove(b));
    assert!(!ix.remove(b));
    let (found, _) = ix.search("ns", &code(1), 5, 256, 0.0).unwrap();
    assert_eq!(found[0].id, a);
    assert_eq!(found.len(), 1);
    assert_eq!(ix.len(), 1);
}

#[test]
fn delete_never_hides_another_match() {
    let mut ix = Index::new(4, 100, false).unwrap();
    let ids: Vec<_> = (0..20)
        .map(|i| ix.insert("n", &code(i), f64::INFINITY).unwrap().0)
        .collect();
    for (i, &id) in ids.iter().enumerate().step_by(2) {
        assert!(ix.remove(id), "{i}");
    }
    for i in (1..20).step_by(2) {
        let (found, _) = ix.search("n", &code(i as u64), 1, 0, 0.0).unwrap();
        assert_eq!(found[0].id, ids[i]);
    }
}

#[test]
fn namespaces_are_isolated_and_dropped_when_empty() {
    let mut ix = Index::new(4, 100, false).unwrap();
    let (a, _) = ix.insert("a", &code(9), f64::INFINITY).unwrap();
    assert!(ix.search("b", &code(9), 1, 256, 0.0).unwrap().0.is_empty());
    assert_eq!(ix.namespaces(), vec!["a".to_string()]);
    ix.remove(a);
    assert!(ix.namespaces().is_empty());
}

#[test]
fn evicts_least_recently_used() {
    let mut ix = Index::new(4, 3, false).unwrap();
    let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
    let b = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
    let c = ix.insert("x", &code(3), f64::INFINITY).unwrap().0;
    assert!(ix.touch(a));
    let (d, evicted) = ix.insert("n", &code(4), f64::INFINITY).unwrap();
    assert_eq!(evicted, Some(b));
    assert_eq!(ix.lru_order(), vec![c, a, d]);
    assert_eq!(ix.len(), 3);
}

#[test]
fn stale_ids_do_not_name_the_next_occupant() {
    let mut ix = Index::new(4, 10, false).unwrap();
    let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
    ix.remove(a);
    let b = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
    assert_eq!(handle_of(a), handle_of(b));
    assert_ne!(a, b);
    assert!(!ix.remove(a));
    assert!(!ix.touch(a));
    assert!(ix.contains(b));
}

#[test]
fn stale_ids_stay_stale_after_hundreds_of_reuses_of_their_slot() {
    let mut ix = Index::new(4, 1, false).unwrap();
    let first = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
    let mut seen = vec![first];
    for i in 0..1000u64 {
        // Capacity 1: every insert evicts the previous entry and reuses its slot.
        let (id, evicted) = ix.insert("n", &code(i), f64::INFINITY).unwrap();
        assert_eq!(evicted, seen.last().copied());
        assert_eq!(handle_of(id), handle_of(first));
        seen.push(id);
    }
    let live = *seen.last().unwrap();
    for &stale in &seen[..seen.len() - 1] {
        assert!(!ix.contains(stale) && !ix.remove(stale) && !ix.touch(stale));
    }
    assert!(ix.contains(live));
}

#[test]
fn generations_survive_to_parts_on_free_slots_past_24_bits() {
    let mut ix = Index::new(4, 4, false).unwrap();
    let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
    ix.remove(a);
    let mut parts = ix.to_parts();
    // A free slot whose next generation needs more than the 24 bits of its position field.
    parts.free[0] = make_id(handle_of(a), (1 << 39) + 5);
    let mut b = Index::from_parts(4, 4, false, parts.as_ref()).unwrap();
    let id = b.insert("n", &code(2), f64::INFINITY).unwrap().0;
    assert_eq!(generation_of(id), (1 << 39) + 5);
    assert_eq!(b.to_parts().ids, vec![id]);
}

#[test]
fn expired_entries_are_reported_not_returned() {
    let mut ix = Index::new(4, 10, true).unwrap();
    let a = ix.insert("n", &code(1), 10.0).unwrap().0;
    let b = ix.insert("n", &code(1), 20.0).unwrap().0;
    let (live, expired) = ix.search("n", &code(1), 2, 0, 15.0).unwrap();
    assert_eq!(live, vec![Found { id: b, distance: 0 }]);
    assert_eq!(expired, vec![a]);
    assert_eq!(ix.expired(25.0).len(), 2);
}

#[test]
fn ids_from_before_a_clear_do_not_name_later_entries() {
    let mut ix = Index::new(4, 10, false).unwrap();
    let old = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
    ix.clear(None);
    let new = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
    assert_ne!(old, new);
    assert!(!ix.contains(old) && !ix.remove(old));
    assert!(ix.contains(new));
}

#[test]
fn clear_one_namespace_or_all() {
    let mut ix = Index::new(4, 10, false).unwrap();
    ix.insert("a", &code(1), f64::INFINITY).unwrap();
    ix.insert("b", &code(2), f64::INFINITY).unwrap();
    assert_eq!(ix.clear(Some("a")).len(), 1);
    assert_eq!(ix.len(), 1);
    assert_eq!(ix.clear(None).len(), 1);
    assert!(ix.is_empty());
}

#[test]
fn randomized_operations_match_a_simple_model() {
    let mut ix = Index::new(1, 50, false).unwrap();
    let mut model: Vec<(EntryId, String, u64)> = Vec::new(); // LRU order, oldest first
    let mut s: u64 = 12345;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    for _ in 0..5000 {
        let op = next() % 10;
        let ns = format!("ns{}", next() % 3);
        if op < 5 {
            let c = next() % 64;
            let (id, ev) = ix.insert(&ns, &[c], f64::INFINITY).unwrap();
            if model.len() == 50 {
                assert_eq!(ev, Some(model.remove(0).0));
            } else {
                assert_eq!(ev, None);
            }
            model.push((id, ns, c));
        } else if op < 7 && !model.is_empty() {
            let i = (next() as usize) % model.len();
            assert!(ix.remove(model.remove(i).0));
        } else if !model.is_empty() {
            let i = (next() as usize) % model.len();
            let e = model.remove(i);
            assert!(ix.touch(e.0));
            let (found, _) = ix.search(&e.1, &[e.2], 64, 0, 0.0).unwrap();
            assert!(found.iter().any(|f| f.id == e.0));
            model.push(e);
        }
        assert_eq!(ix.len(), model.len());
    }
    assert_eq!(
        ix.lru_order(),
        model.iter().map(|e| e.0).collect::<Vec<_>>()
    );
}

// ------------------------------------------------------------------ parts

fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 33
}

/// An index after a random mix of inserts, deletes and touches over a few namespaces.
fn shuffled_index(seed: u64, with_expiry: bool) -> Index {
    let mut ix = Index::new(2, 40, with_expiry).unwrap();
    let mut s = seed;
    let mut live: Vec<EntryId> = Vec::new();
    for step in 0..400 {
        let op = lcg(&mut s) % 10;
        if op < 6 || live.is_empty() {
            let ns = format!("ns{}", lcg(&mut s) % 4);
            let (id, ev) = ix
                .insert(&ns, &[lcg(&mut s), lcg(&mut s)], step as f64)
                .unwrap();
            live.retain(|&l| Some(l) != ev);
            live.push(id);
        } else if op < 8 {
            let i = (lcg(&mut s) as usize) % live.len();
            assert!(ix.remove(live.swap_remove(i)));
        } else {
            let i = (lcg(&mut s) as usize) % live.len();
            assert!(ix.touch(live[i]));
        }
    }
    ix
}

fn assert_same(a: &mut Index, b: &mut Index) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.namespaces(), b.namespaces());
    assert_eq!(a.lru_order(), b.lru_order());
    for id in a.lru_order() {
        let (ns, code, exp) = a.entry(id).unwrap();
        let (ns2, code2, exp2) = b.entry(id).unwrap();
        assert_eq!((ns, code, exp.to_bits()), (ns2, code2, exp2.to_bits()));
        assert_eq!(
            a.search(ns, code, 3, 128, 0.0).unwrap(),
            b.search(ns, code, 3, 128, 0.0).unwrap()
        );
    }
    // The same future: new ids (free-list order, generations) and evictions match.
    for i in 0..60u64 {
        let ns = format!("ns{}", i % 5);
        let code: Vec<u64> = (0..a.words() as u64)
            .map(|w| i ^ w.rotate_left(9))
            .collect();
        assert_eq!(
            a.insert(&ns, &code, 1.0).unwrap(),
            b.insert(&ns, &code, 1.0).unwrap()
        );
    }
    assert_eq!(a.lru_order(), b.lru_order());
}

#[test]
fn from_parts_of_to_parts_is_the_same_index() {
    for seed in 0..20 {
        for with_expiry in [false, true] {
            let mut a = shuffled_index(seed, with_expiry);
            let parts = a.to_parts();
            let mut b = Index::from_parts(2, 40, with_expiry, parts.as_ref()).unwrap();
            assert_eq!(b.to_parts(), parts);
            assert_same(&mut a, &mut b);
        }
    }
}

#[test]
fn empty_index_round_trips() {
    let mut a = Index::new(4, 5, false).unwrap();
    let mut b = Index::from_parts(4, 5, false, a.to_parts().as_ref()).unwrap();
    assert!(b.is_empty());
    assert_same(&mut a, &mut b);
}

#[test]
fn from_parts_rejects_every_broken_invariant() {
    let good = shuffled_index(7, true).to_parts();
    assert!(!good.free.is_empty() && good.names.len() > 1);
    type Breaker = Box<dyn Fn(&mut IndexParts)>;
    let broken: Vec<(&str, Breaker)> = vec![
        ("names/counts", Box::new(|p| p.names.truncate(1))),
        ("zero count", Box::new(|p| p.counts[0] = 0)),
        ("count sum", Box::new(|p| p.counts[0] += 1)),
        ("codes", Box::new(|p| p.codes.pop().map(drop).unwrap_or(()))),
        ("lru short", Box::new(|p| p.lru.truncate(1))),
        ("lru dup", Box::new(|p| p.lru[0] = p.lru[1])),
        ("lru range", Box::new(|p| p.lru[0] = u32::MAX)),
        ("expires", Box::new(|p| p.expires.clear())),
        ("nan", Box::new(|p| p.expires[0] = f64::NAN)),
        ("dup handle", Box::new(|p| p.ids[0] = p.ids[1])),
        ("free dup", Box::new(|p| p.free[0] = p.ids[0])),
        ("handle range", Box::new(|p| p.ids[0] = u64::from(MASK24))),
        ("dup name", Box::new(|p| p.names[1] = p.names[0].clone())),
        ("too many", Box::new(|p| p.ids.extend_from_slice(&[1; 100]))),
    ];
    for (what, f) in broken {
        let mut p = good.clone();
        f(&mut p);
        assert!(
            Index::from_parts(2, 40, true, p.as_ref()).is_err(),
            "{what} accepted"
        );
    }
    assert!(
        Index::from_parts(2, 40, false, good.as_ref()).is_err(),
        "expiry mismatch accepted"
    );
    assert!(
        Index::from_parts(4, 40, true, good.as_ref()).is_err(),
        "word count mismatch accepted"
    );
    assert!(
        Index::from_parts(2, 3, true, good.as_ref()).is_err(),
        "over capacity accepted"
    );
}

fn row(seed: i8, dim: usize) -> Vec<i8> {
    (0..dim)
        .map(|i| (seed as i32 * 7 + i as i32 * 13).rem_euclid(255) as i8)
        .collect()
}

fn unit_of(r: &[i8]) -> Vec<f32> {
    let norm = rows::row_norm(r);
    r.iter().map(|&v| f32::from(v) / norm).collect()
}

#[test]
fn lookup_reranks_by_the_rows_of_the_ids_it_found_and_applies_the_threshold() {
    let dim = 16;
    let mut ix = Index::new(4, 10, false).unwrap().with_rows(dim).unwrap();
    let (a, _) = ix
        .insert_row("n", &code(1), &row(1, dim), f64::INFINITY)
        .unwrap();
    let (b, _) = ix
        .insert_row("n", &code(1), &row(2, dim), f64::INFINITY)
        .unwrap();
    // Same code, different rows: the query's unit vector decides, best first.
    let unit = unit_of(&row(2, dim));
    let q = Lookup {
        namespace: "n",
        code: &code(1),
        unit: Some(&unit),
        k: 5,
        max_distance: 0,
        now: 0.0,
        min_similarity: -1.0,
    };
    let (found, expired) = ix.lookup(&q).unwrap();
    assert!(expired.is_empty());
    assert_eq!(found.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b, a]);
    assert!((found[0].similarity - 1.0).abs() < 1e-6);
    let strict = Lookup {
        min_similarity: 0.99,
        ..q
    };
    assert_eq!(ix.lookup(&strict).unwrap().0.len(), 1);
    // After b is deleted and its slot reused, the slot's new row answers, not b's.
    ix.remove(b);
    let (c, _) = ix
        .insert_row("n", &code(1), &row(3, dim), f64::INFINITY)
        .unwrap();
    let found = ix.lookup(&q).unwrap().0;
    assert!(found.iter().all(|f| f.id != b));
    let sim_c = found.iter().find(|f| f.id == c).unwrap().similarity;
    let want = f64::from(rows::dot(&row(3, dim), &unit) / rows::row_norm(&row(3, dim)));
    assert!((sim_c - want).abs() < 1e-6);
    // Without a unit vector the similarity is estimated from the distance.
    let coarse = Lookup { unit: None, ..q };
    assert!(ix
        .lookup(&coarse)
        .unwrap()
        .0
        .iter()
        .all(|f| f.similarity == 1.0));
}

#[test]
fn rows_of_the_wrong_length_are_refused_before_anything_changes() {
    let mut ix = Index::new(4, 10, false).unwrap().with_rows(8).unwrap();
    assert!(matches!(
        ix.insert_row("n", &code(1), &[1, 2, 3], f64::INFINITY),
        Err(BscError::Shape(_))
    ));
    assert!(matches!(
        ix.insert_rows("n", &[1, 2, 3, 4, 5, 6, 7, 8], &[0; 8], f64::INFINITY),
        Err(BscError::Shape(_))
    ));
    assert_eq!(ix.len(), 0);
    assert!(Index::new(4, 10, false)
        .unwrap()
        .with_rows(1 << 20)
        .is_err());
}

#[test]
fn set_rows_refuses_a_norm_that_is_not_its_rows() {
    let dim = 8;
    let mut ix = Index::new(4, 10, false).unwrap().with_rows(dim).unwrap();
    ix.insert_row("n", &code(1), &row(1, dim), f64::INFINITY)
        .unwrap();
    let (rows_by_handle, norms) = ix.rows_by_handle();
    let (rows_by_handle, norms) = (rows_by_handle.to_vec(), norms.to_vec());
    let parts = ix.to_parts();
    let mut copy = Index::from_parts(4, 10, false, parts.as_ref()).unwrap();
    assert!(matches!(
        copy.set_rows(dim, &rows_by_handle, &[norms[0] * 0.5]),
        Err(BscError::Corrupt(_))
    ));
    assert!(matches!(
        copy.set_rows(dim, &rows_by_handle[1..], &norms),
        Err(BscError::Corrupt(_))
    ));
    copy.set_rows(dim, &rows_by_handle, &norms).unwrap();
    assert_eq!(copy.rows_by_handle(), (&rows_by_handle[..], &norms[..]));
}
