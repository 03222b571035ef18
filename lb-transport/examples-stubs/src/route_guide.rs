//! The route guide: a small built-in map of features, the geometry its RPCs need,
//! the client's demo of all four kinds of call, and an implementation of the
//! generated `RouteGuide` trait for the server.
//!
//! The Python server in `peers/route_guide_server.py` serves the same map with the
//! same rules, so either server answers the demo alike.

use std::time::Duration;

use lb_core::Status;

use crate::routeguide::{Feature, Point, Rectangle, RouteGuideClient, RouteNote, RouteSummary};

/// The built-in map: names and E7 coordinates (made up for the example).
pub const FEATURES: &[(&str, i32, i32)] = &[
    ("Old Mill Bridge", 400_000_000, -740_000_000),
    ("Lookout Tower", 400_100_000, -740_200_000),
    ("Cedar Falls", 400_250_000, -739_900_000),
    ("Stone Chapel", 400_500_000, -740_500_000),
    ("Fox Hollow Trailhead", 401_000_000, -741_000_000),
    ("Riverside Market", 401_200_000, -739_500_000),
    ("North Pier", 402_000_000, -740_000_000),
    ("Quarry Lake", 399_500_000, -740_300_000),
];

/// The mean radius of the Earth, in meters.
const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// A point from E7 coordinates.
///
/// # Examples
///
/// ```
/// let p = lb_examples::route_guide::point(400_000_000, -740_000_000);
/// assert_eq!((p.latitude, p.longitude), (400_000_000, -740_000_000));
/// ```
pub fn point(latitude: i32, longitude: i32) -> Point {
    Point {
        latitude,
        longitude,
    }
}

/// The built-in map as features.
///
/// # Examples
///
/// ```
/// let features = lb_examples::route_guide::features();
/// assert_eq!(features[0].name, "Old Mill Bridge");
/// ```
pub fn features() -> Vec<Feature> {
    FEATURES
        .iter()
        .map(|&(name, latitude, longitude)| Feature {
            name: name.to_owned(),
            location: Some(point(latitude, longitude)),
        })
        .collect()
}

/// The feature at `at` in `features`, or a feature with an empty name there.
///
/// # Examples
///
/// ```
/// use lb_examples::route_guide::{feature_at, features, point};
/// assert_eq!(feature_at(&features(), &point(400_000_000, -740_000_000)).name, "Old Mill Bridge");
/// assert_eq!(feature_at(&features(), &point(0, 0)).name, "");
/// ```
pub fn feature_at(features: &[Feature], at: &Point) -> Feature {
    features
        .iter()
        .find(|f| f.location.as_ref() == Some(at))
        .cloned()
        .unwrap_or_else(|| Feature {
            name: String::new(),
            location: Some(*at),
        })
}

/// Whether `p` lies inside `rect` (its corners in any order, edges included).
///
/// # Examples
///
/// ```
/// use lb_examples::route_guide::{in_range, point};
/// use lb_examples::routeguide::Rectangle;
/// let rect = Rectangle { lo: Some(point(10, 10)), hi: Some(point(0, 0)) };
/// assert!(in_range(&point(5, 10), &rect));
/// assert!(!in_range(&point(11, 5), &rect));
/// ```
pub fn in_range(p: &Point, rect: &Rectangle) -> bool {
    let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
    let within = |v: i32, a: i32, b: i32| a.min(b) <= v && v <= a.max(b);
    within(p.latitude, lo.latitude, hi.latitude) && within(p.longitude, lo.longitude, hi.longitude)
}

/// The great-circle distance between two points, in meters (haversine formula).
///
/// # Examples
///
/// ```
/// use lb_examples::route_guide::{distance, point};
/// // A tenth of a degree of latitude is about 11.1 km.
/// let d = distance(&point(400_000_000, -740_000_000), &point(401_000_000, -740_000_000));
/// assert!((11_000.0..11_200.0).contains(&d), "{d}");
/// ```
pub fn distance(a: &Point, b: &Point) -> f64 {
    let radians = |e7: i32| (f64::from(e7) / 1e7).to_radians();
    let (lat1, lat2) = (radians(a.latitude), radians(b.latitude));
    let d_lat = lat2 - lat1;
    let d_lon = radians(b.longitude) - radians(a.longitude);
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().atan2((1.0 - h).sqrt())
}

/// The summary of a route: its points, how many are features, the distance from
/// point to point (whole meters, rounded down) and the time taken (whole seconds).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_examples::route_guide::{features, point, summarize};
/// let route = [point(400_000_000, -740_000_000), point(0, 0)];
/// let summary = summarize(&route, &features(), Duration::from_secs(3));
/// assert_eq!((summary.point_count, summary.feature_count, summary.elapsed_time), (2, 1, 3));
/// ```
pub fn summarize(route: &[Point], features: &[Feature], elapsed: Duration) -> RouteSummary {
    let known = route
        .iter()
        .filter(|p| !feature_at(features, p).name.is_empty())
        .count();
    let meters: f64 = route.windows(2).map(|w| distance(&w[0], &w[1])).sum();
    RouteSummary {
        point_count: saturate(route.len()),
        feature_count: saturate(known),
        // Whole meters, rounded down (and saturated), as the proto says.
        distance: meters as i32,
        elapsed_time: i32::try_from(elapsed.as_secs()).unwrap_or(i32::MAX),
    }
}

fn saturate(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The rectangle the demo lists: it holds the first four features.
pub fn demo_rectangle() -> Rectangle {
    Rectangle {
        lo: Some(point(399_900_000, -740_600_000)),
        hi: Some(point(400_600_000, -739_800_000)),
    }
}

/// The route the demo records: the first three features, then a point that is
/// none.
pub fn demo_route() -> Vec<Point> {
    let mut route: Vec<Point> = features()
        .iter()
        .take(3)
        .filter_map(|f| f.location)
        .collect();
    route.push(point(400_300_000, -740_100_000));
    route
}

/// The notes the demo chats: six notes at three points, so that the last three
/// each bring back the one left earlier at their point.
pub fn demo_notes() -> Vec<RouteNote> {
    ["First", "Second", "Third", "Fourth", "Fifth", "Sixth"]
        .iter()
        .zip([1, 2, 3, 1, 2, 3])
        .map(|(message, longitude)| RouteNote {
            location: Some(point(0, longitude)),
            message: format!("{message} message"),
        })
        .collect()
}

/// What the demo saw, one field per kind of call.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoReport {
    /// GetFeature at the first feature, then at a point with no feature.
    pub features_got: Vec<Feature>,
    /// ListFeatures over [`demo_rectangle`].
    pub features_listed: Vec<Feature>,
    /// RecordRoute over [`demo_route`].
    pub summary: RouteSummary,
    /// RouteChat of [`demo_notes`]: the notes that came back.
    pub notes: Vec<RouteNote>,
}

/// Runs the route guide demo with `client`: one call of each kind, printing what
/// happens when `verbose`.
///
/// # Errors
///
/// The first call that failed: its status.
pub fn run_demo(client: &RouteGuideClient, verbose: bool) -> Result<DemoReport, Status> {
    let say = |line: String| {
        if verbose {
            println!("{line}");
        }
    };

    // Unary.
    let mut features_got = Vec::new();
    for at in [point(400_000_000, -740_000_000), point(0, 0)] {
        let feature = client.get_feature(&at)?;
        say(format!(
            "GetFeature({}, {}) -> {:?}",
            at.latitude, at.longitude, feature.name
        ));
        features_got.push(feature);
    }

    // Server-streaming.
    let mut features_listed = Vec::new();
    for feature in client.list_features(&demo_rectangle())? {
        let feature = feature?;
        say(format!("ListFeatures -> {:?}", feature.name));
        features_listed.push(feature);
    }

    // Client-streaming.
    let recording = client.record_route()?;
    for p in demo_route() {
        recording.send(&p)?;
    }
    let summary = recording.finish()?;
    say(format!(
        "RecordRoute -> {} points, {} features, {} m, {} s",
        summary.point_count, summary.feature_count, summary.distance, summary.elapsed_time
    ));

    // Bidirectional streaming: one thread sends while this one receives.
    let (tx, rx) = client.route_chat()?.split();
    let sender = std::thread::spawn(move || -> Result<(), Status> {
        for note in demo_notes() {
            tx.send(&note)?;
        }
        tx.close_send();
        Ok(())
    });
    let mut notes = Vec::new();
    for note in rx {
        let note = note?;
        let at = note.location.unwrap_or_default();
        say(format!(
            "RouteChat -> {:?} at ({}, {})",
            note.message, at.latitude, at.longitude
        ));
        notes.push(note);
    }
    sender
        .join()
        .map_err(|_| Status::internal("the RouteChat sender panicked"))??;

    Ok(DemoReport {
        features_got,
        features_listed,
        summary,
        notes,
    })
}

pub use service::RouteGuideService;

/// The server side.
mod service {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    use lb_core::Status;
    use lb_transport::stubs::Response;
    use lb_transport::stubs::server::{BidiStream, Request, RequestStream, ResponseSink};

    use super::{feature_at, features, in_range, summarize};
    use crate::routeguide::{Feature, Point, Rectangle, RouteGuide, RouteNote, RouteSummary};

    /// The `routeguide.RouteGuide` service over the built-in map.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lb_examples::route_guide::RouteGuideService;
    /// use lb_examples::routeguide::RouteGuideServer;
    /// use lb_transport::server::Server;
    ///
    /// let server = RouteGuideServer::new(RouteGuideService::new())
    ///     .mount(Server::builder())
    ///     .bind("127.0.0.1:10000")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[derive(Debug)]
    pub struct RouteGuideService {
        features: Vec<Feature>,
        /// The notes left so far, by point.
        notes: Mutex<HashMap<(i32, i32), Vec<RouteNote>>>,
    }

    impl RouteGuideService {
        /// A service over the built-in map, with no notes yet.
        pub fn new() -> Self {
            Self {
                features: features(),
                notes: Mutex::new(HashMap::new()),
            }
        }
    }

    impl Default for RouteGuideService {
        fn default() -> Self {
            Self::new()
        }
    }

    impl RouteGuide for RouteGuideService {
        fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
            Ok(Response::new(feature_at(&self.features, &request.message)))
        }

        fn list_features(
            &self,
            request: Rectangle,
            responses: &mut ResponseSink<'_, Feature>,
        ) -> Result<(), Status> {
            for feature in &self.features {
                if feature.location.is_some_and(|p| in_range(&p, &request)) {
                    responses.send(feature)?;
                }
            }
            Ok(())
        }

        fn record_route(
            &self,
            requests: &mut RequestStream<'_, Point>,
        ) -> Result<RouteSummary, Status> {
            let start = Instant::now();
            let route = requests.collect::<Result<Vec<Point>, Status>>()?;
            Ok(summarize(&route, &self.features, start.elapsed()))
        }

        fn route_chat(
            &self,
            stream: &mut BidiStream<'_, RouteNote, RouteNote>,
        ) -> Result<(), Status> {
            while let Some(note) = stream.recv()? {
                let at = note.location.unwrap_or_default();
                let earlier = {
                    let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
                    let here = notes.entry((at.latitude, at.longitude)).or_default();
                    let earlier = here.clone();
                    here.push(note);
                    earlier
                };
                for note in &earlier {
                    stream.send(note)?;
                }
            }
            Ok(())
        }
    }
}
