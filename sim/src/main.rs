//! Prints the scale simulation's table: `ganglion-sim [NODES...]` (default 100 1000 10000),
//! in regions of 100 nodes, with 1 % packet loss and 10 nodes killed and 10 added.

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of nodes"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 10_000]
    } else {
        sizes
    };
    println!("{}", ganglion_sim::header());
    for nodes in sizes {
        let report = ganglion_sim::run(&ganglion_sim::Setup {
            nodes,
            region_size: 100,
            loss: 0.01,
            churn: 10,
            seed: 7,
        });
        println!("{}", ganglion_sim::row(&report));
    }
}
