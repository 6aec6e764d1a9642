//! The Kantata OX (Mavenlink) simulator.
