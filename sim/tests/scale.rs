//! 300 nodes, past where the mesh used to break (adverts listing more than 256 peers were
//! refused, and seeds filled at 256 connections): in one region, and in three. Every node
//! joins, no advert is refused, no dial meets a cap, and every request finds its model.

use ganglion_sim::{Setup, run};

fn check(region_size: usize) {
    let report = run(&Setup {
        nodes: 300,
        region_size,
        loss: 0.01,
        churn: 4,
        seed: 11,
    });
    eprintln!("{}\n{}", ganglion_sim::header(), ganglion_sim::row(&report));
    assert!(report.formation_s.is_some(), "the mesh never formed");
    assert_eq!(report.unjoined, 0, "nodes that could not join");
    assert_eq!(report.refused_adverts, 0);
    assert!(report.adverts > 0);
    assert_eq!(report.refused_dials, 0);
    assert_eq!(report.join_s.count, 4, "every new node joined");
    assert_eq!(report.placed, 1.0, "every request found its model");
    assert_eq!(
        report.owner_agreement, 1.0,
        "every node names the same cache owners"
    );
}

#[test]
fn three_hundred_nodes_in_one_region_all_join_and_no_advert_is_refused() {
    check(300);
}

#[test]
fn three_hundred_nodes_in_three_regions_all_join_and_route_across_them() {
    check(100);
}
