//! The `helloworld.Greeter` service: an implementation of the generated
//! [`Greeter`] trait.

use lb_core::{Metadata, Status};
use lb_transport::stubs::Response;
use lb_transport::stubs::server::Request;

use crate::helloworld::{Greeter, HelloReply, HelloRequest};

/// Greets by name: `Hello <name>`. An empty name fails with INVALID_ARGUMENT; a
/// request's `x-request-id` metadata comes back in the trailers.
///
/// # Examples
///
/// Calling the service directly, without a server:
///
/// ```
/// use lb_examples::greeter::MyGreeter;
/// use lb_examples::helloworld::{Greeter, HelloRequest};
/// use lb_transport::stubs::server::Request;
///
/// let reply = MyGreeter.say_hello(Request::new(HelloRequest { name: "you".into() }))?;
/// assert_eq!(reply.message.message, "Hello you");
/// # Ok::<(), lb_core::Status>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MyGreeter;

impl Greeter for MyGreeter {
    fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        if request.message.name.is_empty() {
            return Err(Status::invalid_argument("a name is needed"));
        }
        let mut response = Response::new(HelloReply {
            message: format!("Hello {}", request.message.name),
        });
        if let Some(id) = request.metadata().get("x-request-id") {
            let mut trailers = Metadata::new();
            trailers
                .insert("x-request-id", id)
                .map_err(|e| Status::internal(e.to_string()))?;
            response.trailers = trailers;
        }
        Ok(response)
    }
}
